"""The broker's access control: the request-code rules and the check applied to every request."""

from krocket.broker.acl.checker import check_request
from krocket.broker.acl.own_traffic import own_traffic_signer
from krocket.broker.acl.rules import RULES, Access, Need, rule_of

__all__ = ["RULES", "Access", "Need", "check_request", "own_traffic_signer", "rule_of"]
