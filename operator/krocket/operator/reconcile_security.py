"""The security step of a BrokerGroup's or NameServerSet's reconcile: NetworkPolicy, ACL Secret, TLS certificate.

It returns the security children to apply with the others and one `SecurityReady` condition; a missing or bad
Secret is that condition (and a Warning event), never an exception. For a BrokerGroup it also tells the broker
admin client how to call the group's pods (`AdminAccess`): the ACL's first admin account (HTTP basic auth) and the
CA of its TLS Secret.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from krocket.common.errors import ConfigError
from krocket.operator import build_acl, build_security, build_tls
from krocket.operator import conditions as cond
from krocket.operator import constants as c
from krocket.operator.broker_admin import EndpointAccess
from krocket.operator.build_common import Manifest, meta
from krocket.operator.context import OperatorContext
from krocket.operator.kube import NETWORKPOLICIES, SECRETS
from krocket.operator.outcome import Event
from krocket.operator.reconcile_user import render_cluster_acl

log = logging.getLogger(__name__)

SECURITY_READY = "SecurityReady"
REASON_SECURED = "Secured"
REASON_ACL_SECRET_NOT_FOUND = "AclSecretNotFound"
REASON_ACL_INVALID = "AclInvalid"
REASON_ACL_NO_ADMIN = "AclNoAdminAccount"
REASON_TLS_SECRET_NOT_FOUND = "TlsSecretNotFound"
REASON_TLS_SECRET_INVALID = "TlsSecretInvalid"
REASON_CERTIFICATE_PENDING = "WaitingForCertificate"
TLS_KEYS = ("tls.crt", "tls.key")


@dataclass
class SecurityStep:
    children: list[Manifest] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (reason, message)
    events: list[Event] = field(default_factory=list)
    admin: EndpointAccess | None = None

    def condition(self) -> cond.Condition:
        if self.problems:
            reason, message = self.problems[0]
            return cond.Condition(SECURITY_READY, cond.FALSE, reason, "; ".join(m for _, m in self.problems))
        return cond.Condition(SECURITY_READY, cond.TRUE, REASON_SECURED, "network policy, ACL and TLS as specified")

    def problem(self, reason: str, message: str) -> None:
        self.problems.append((reason, message))
        self.events.append(Event("Warning", reason, message))


async def _network_policy(
    body: Mapping[str, Any], ctx: OperatorContext, component: str, cluster: str | None, step: SecurityStep
) -> None:
    if build_security.enabled(body):
        step.children.append(build_security.network_policy(body, component, ctx.config.network, cluster))
        return
    # Opted out after creation: the operator may not delete (children go by garbage collection), so it opens its
    # own policy to all ingress instead.
    ns, name = meta(body)["namespace"], build_security.network_policy_name(meta(body)["name"])
    live = await ctx.started_kube().get(NETWORKPOLICIES, ns, name)
    owner_uid = meta(body).get("uid")
    owned = any(r.get("uid") == owner_uid for r in (live or {}).get("metadata", {}).get("ownerReferences") or [])
    if live is not None and owned and (live.get("spec") or {}).get("ingress") != [{}]:
        await ctx.started_kube().patch(NETWORKPOLICIES, ns, name, {"spec": {"ingress": [{}]}})
        step.events.append(Event("Normal", "NetworkPolicyOpened", f"networkPolicy.enabled is false: {name} allows all"))


async def _acl(body: Mapping[str, Any], ctx: OperatorContext, cluster: str | None, step: SecurityStep) -> None:
    src = build_acl.source(body, cluster)
    if src is None:
        return
    kube, ns = ctx.started_kube(), meta(body)["namespace"]
    if src.rendered:
        await render_cluster_acl(kube, ns, src.cluster)
    secret = await kube.get(SECRETS, ns, src.secret_name)
    if secret is None:
        step.problem(
            REASON_ACL_SECRET_NOT_FOUND,
            f"ACL Secret {src.secret_name!r} not found: pods wait for it (create it, or fix spec.acl.secretRef)",
        )
        return
    text = build_acl.secret_text(secret, src.key)
    if text is None:
        step.problem(REASON_ACL_SECRET_NOT_FOUND, f"ACL Secret {src.secret_name!r} has no key {src.key!r}")
        return
    try:
        admin = build_acl.admin_credentials(text)
    except ConfigError as e:
        step.problem(REASON_ACL_INVALID, f"Secret {src.secret_name!r} key {src.key!r}: {e.message}")
        return
    if admin is None:
        step.problem(
            REASON_ACL_NO_ADMIN,
            f"ACL in Secret {src.secret_name!r} has no admin account: brokers cannot sign their registrations and "
            "the operator cannot use the admin API (add an account with admin: true first)",
        )
        return
    step.admin = EndpointAccess(access_key=admin[0], secret_key=admin[1])


async def _tls(
    body: Mapping[str, Any],
    ctx: OperatorContext,
    component: str,
    cluster: str | None,
    services: list[str],
    headless: str,
    step: SecurityStep,
) -> ssl.SSLContext | None:
    src = build_tls.source(body)
    if src is None:
        return None
    certificate = build_tls.certificate(body, component, services, headless, cluster)
    if certificate is not None:
        step.children.append(certificate)
    secret = await ctx.started_kube().get(SECRETS, meta(body)["namespace"], src.secret_name)
    if secret is None:
        if src.cert_manager:
            step.problem(REASON_CERTIFICATE_PENDING, f"waiting for cert-manager to issue Secret {src.secret_name!r}")
        else:
            step.problem(REASON_TLS_SECRET_NOT_FOUND, f"TLS Secret {src.secret_name!r} not found: pods wait for it")
        return None
    missing = [k for k in TLS_KEYS if not build_acl.secret_text(secret, k)]
    if missing:
        step.problem(REASON_TLS_SECRET_INVALID, f"TLS Secret {src.secret_name!r} lacks {', '.join(missing)}")
        return None
    ca = build_acl.secret_text(secret, build_tls.CA_KEY)
    if not ca or not src.http:
        return None
    try:
        return ssl.create_default_context(cadata=ca)
    except (ssl.SSLError, ValueError) as e:
        step.problem(REASON_TLS_SECRET_INVALID, f"TLS Secret {src.secret_name!r}: ca.crt does not load: {e}")
        return None


async def secure(
    body: Mapping[str, Any],
    ctx: OperatorContext,
    component: str,
    *,
    cluster: str | None,
    services: list[str],
    headless: str,
    ordinals: int = 0,
) -> SecurityStep:
    """The security children and condition of `body`; `ordinals` pods of a BrokerGroup get their admin access."""
    step = SecurityStep()
    await _network_policy(body, ctx, component, cluster, step)
    await _acl(body, ctx, cluster if component == c.COMPONENT_BROKER else None, step)
    trust = await _tls(body, ctx, component, cluster, services, headless, step)
    if component == c.COMPONENT_BROKER:
        admin = step.admin or EndpointAccess()
        access = EndpointAccess(access_key=admin.access_key, secret_key=admin.secret_key, ssl_context=trust)
        for i in range(ordinals):
            url = ctx.resolver.admin_url(body, i)
            if url:
                ctx.admin_access.set(url, access)
    return step


async def secure_brokergroup(group: Mapping[str, Any], ctx: OperatorContext) -> SecurityStep:
    from krocket.operator import build_brokergroup as bg  # imported late: broker_admin imports build_brokergroup

    name = meta(group)["name"]
    headless = bg.headless_service_name(name)
    return await secure(
        group,
        ctx,
        c.COMPONENT_BROKER,
        cluster=bg.cluster_name(group),
        services=[headless],
        headless=headless,
        ordinals=bg.replicas(group),
    )


async def secure_nameserverset(body: Mapping[str, Any], ctx: OperatorContext) -> SecurityStep:
    from krocket.operator import build_namesrv as nsrv

    name = meta(body)["name"]
    headless = nsrv.headless_service_name(name)
    return await secure(
        body,
        ctx,
        c.COMPONENT_NAMESRV,
        cluster=None,
        services=[nsrv.client_service_name(name), headless],
        headless=headless,
    )
