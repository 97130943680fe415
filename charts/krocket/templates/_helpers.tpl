{{- define "krocket.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "krocket.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s-operator" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "krocket.labels" -}}
app.kubernetes.io/name: {{ include "krocket.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "krocket.selectorLabels" -}}
app.kubernetes.io/name: {{ include "krocket.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "krocket.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "krocket.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels of the example resources: what the pre-delete cleanup selects (release name + managed by Helm). */}}
{{- define "krocket.exampleLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: krocket
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* An example resource: a post-install hook of this weight, kept (no delete policy) until the pre-delete cleanup. */}}
{{- define "krocket.exampleHook" -}}
helm.sh/hook: post-install
helm.sh/hook-weight: {{ . | quote }}
{{- end -}}

{{/* The operator image (also runs the uninstall cleanup and the helm test). */}}
{{- define "krocket.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The restricted-PSS security contexts of the hook pods. */}}
{{- define "krocket.hookPodSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "krocket.hookContainerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Namespaces watched in namespaced mode: the list, or the release namespace. */}}
{{- define "krocket.watchNamespaces" -}}
{{- if .Values.watch.namespaces -}}
{{- join "," .Values.watch.namespaces -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* Rules for the krocket resources and their children (no pods/exec, no secrets). */}}
{{- define "krocket.namespacedRules" -}}
- apiGroups: ["krocket.io"]
  resources: ["nameserversets", "brokergroups", "topics"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["krocket.io"]
  resources: ["nameserversets/status", "brokergroups/status", "topics/status"]
  verbs: ["get", "patch"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# ConsumerGroup: the resource and its status, and the consumers' replicas through the scale subresource only.
- apiGroups: ["krocket.io"]
  resources: ["consumergroups"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["krocket.io"]
  resources: ["consumergroups/status"]
  verbs: ["get", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments/scale", "statefulsets/scale"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "create", "patch"]
# ConfigMaps: one per config revision of a BrokerGroup; those of finished rolls are listed and deleted.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  # delete: a forced master roll deletes a broker pod that is not Ready (the StatefulSet controller waits on it)
  verbs: ["get", "list", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# Security (reconcile_security, reconcile_user): User resources, the ACL and credentials Secrets the operator
# renders (and the ACL/TLS Secrets it checks), NetworkPolicies and cert-manager Certificates.
- apiGroups: ["krocket.io"]
  resources: ["users"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["krocket.io"]
  resources: ["users/status"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["cert-manager.io"]
  resources: ["certificates"]
  verbs: ["get", "create", "patch"]
{{- if .Values.leaderElection.enabled }}
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end -}}
