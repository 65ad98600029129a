{{/*
The chart name, or nameOverride.
*/}}
{{- define "flotilla.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: fullnameOverride, else the release name (with the chart name
appended unless the release name already contains it). Truncated to 63 characters because some
Kubernetes name fields are limited to a DNS label.
*/}}
{{- define "flotilla.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "flotilla.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that never change over the release's life: the Deployment's selector and the pods'
identity. A Deployment's selector is immutable, so changing these would fail every upgrade.
*/}}
{{- define "flotilla.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flotilla.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels on every object the chart creates.
*/}}
{{- define "flotilla.labels" -}}
helm.sh/chart: {{ include "flotilla.chart" . }}
{{ include "flotilla.selectorLabels" . }}
app.kubernetes.io/component: operator
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: flotilla
{{- end }}

{{/*
The ServiceAccount the operator runs as.
*/}}
{{- define "flotilla.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flotilla.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The container image: repository@digest when a digest is given, else repository:tag with the tag
defaulting to the chart's appVersion.
*/}}
{{- define "flotilla.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The name of the leader-election Lease.
*/}}
{{- define "flotilla.leaseName" -}}
{{- default (printf "%s-leader" (include "flotilla.fullname" .)) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
The enabled controllers, comma-separated, in a stable (alphabetical) order. Fails the render
when none is enabled: an operator running no controller is a mistake, not a configuration.
*/}}
{{- define "flotilla.controllers" -}}
{{- $enabled := list }}
{{- range $name, $controller := .Values.controllers }}
{{- if $controller.enabled }}
{{- $enabled = append $enabled $name }}
{{- end }}
{{- end }}
{{- if not $enabled }}
{{- fail "controllers: enable at least one controller" }}
{{- end }}
{{- $enabled | sortAlpha | join "," }}
{{- end }}

{{/*
Refuses combinations the schema cannot express.
*/}}
{{- define "flotilla.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "leaderElection.enabled must be true when replicaCount > 1: without it every replica would reconcile and write" }}
{{- end }}
{{- if and .Values.controllers.campaign.enabled (not .Values.controllers.channel.enabled) }}
{{- fail "controllers.campaign.enabled needs controllers.channel.enabled: campaigns send through the Channels the channel controller checks" }}
{{- end }}
{{- end }}

{{/*
The device gateway's name prefix.
*/}}
{{- define "flotilla.gateway.fullname" -}}
{{- printf "%s-gateway" (include "flotilla.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The gateway pods' selector labels. Their app.kubernetes.io/name differs from the operator's, so
neither the operator's Deployment nor its metrics Service selects gateway pods (the operator's
selector is immutable and has no component label to tell them apart).
*/}}
{{- define "flotilla.gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flotilla.name" . }}-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels on every gateway object.
*/}}
{{- define "flotilla.gateway.labels" -}}
helm.sh/chart: {{ include "flotilla.chart" . }}
{{ include "flotilla.gateway.selectorLabels" . }}
app.kubernetes.io/component: gateway
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: flotilla
{{- end }}

{{/*
The ServiceAccount the gateway runs as.
*/}}
{{- define "flotilla.gateway.serviceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create }}
{{- default (include "flotilla.gateway.fullname" .) .Values.gateway.serviceAccount.name }}
{{- else }}
{{- required "gateway.serviceAccount.name is required when gateway.serviceAccount.create is false" .Values.gateway.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The gateway's image: gateway.image where its repository is set, else the operator's image (the
same `flotilla` binary runs both).
*/}}
{{- define "flotilla.gateway.image" -}}
{{- $image := .Values.image }}
{{- if .Values.gateway.image.repository }}
{{- $image = .Values.gateway.image }}
{{- end }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/*
The gateway's RBAC rules: equal to config/rbac/gateway_role.yaml (each rule's reason is
documented there); .ci/check_chart_rbac.py fails CI when they differ.
*/}}
{{- define "flotilla.gateway.rules" -}}
- apiGroups: ["flotilla.dev"]
  resources: ["devices"]
  verbs: ["get", "list", "watch", "create"]
- apiGroups: ["flotilla.dev"]
  resources: ["devices/status"]
  verbs: ["patch"]
- apiGroups: ["flotilla.dev"]
  resources: ["firmwarereleases"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["list", "watch"]
{{- end }}
