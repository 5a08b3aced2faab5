{{/*
The application name, the value of the app.kubernetes.io/name label: always the
chart name, whatever the release is called.
*/}}
{{- define "stageset.name" -}}
stageset-controller
{{- end -}}

{{/*
Base name of every namespaced object, derived from the release (DECISIONS 22)
so several releases fit in one namespace: the release name when it contains the
chart name, else `<release>-stageset-controller` (Helm's usual fullname rule).
The release `stageset-controller` therefore keeps the names of operations spec
§2.1 (`stageset-controller`, `stageset-controller-webhook`, ...).
Kept within 44 characters so the longest suffix (`-webhook-selfsigned`, 19)
stays within the 63 of a DNS label; a longer name is cut to 35 characters
plus `-` and 8 hex characters of the release name's SHA-256, so two long
release names that share a prefix still get different names.
*/}}
{{- define "stageset.fullname" -}}
{{- $chart := include "stageset.name" . -}}
{{- $full := .Release.Name -}}
{{- if not (contains $chart .Release.Name) -}}
{{- $full = printf "%s-%s" .Release.Name $chart -}}
{{- end -}}
{{- if gt (len $full) 44 -}}
{{- $full = printf "%s-%s" ($full | trunc 35 | trimSuffix "-") (sha256sum .Release.Name | trunc 8) -}}
{{- end -}}
{{- $full -}}
{{- end -}}

{{/*
Cluster-scoped objects carry the base name and the release namespace, so
neither two installs in different namespaces (one per tenant group,
docs/decisions.md 8) nor two releases in one namespace (shards, DECISIONS 22)
collide.
*/}}
{{- define "stageset.clusterName" -}}
{{- /* trimSuffix: `helm lint` renders without a namespace. */ -}}
{{ printf "%s-%s" (include "stageset.fullname" .) .Release.Namespace | trimSuffix "-" }}
{{- end -}}

{{- define "stageset.chart" -}}
{{ .Chart.Name }}-{{ .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Immutable selector labels: never version or managed-by. */}}
{{- define "stageset.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stageset.name" . }}
app.kubernetes.io/component: controller
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: stageset-controller
{{- end -}}

{{- define "stageset.labels" -}}
{{ include "stageset.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "stageset.chart" . }}
{{- end -}}

{{- define "stageset.image" -}}
{{ .Values.image.registry }}/{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "stageset.webhookService" -}}
{{ include "stageset.fullname" . }}-webhook
{{- end -}}

{{/* Size limit of the self-signed mode's certificate emptyDir. */}}
{{- define "stageset.certDirSizeLimit" -}}
1Mi
{{- end -}}

{{- define "stageset.webhookCertName" -}}
{{ include "stageset.fullname" . }}-webhook-cert
{{- end -}}

{{/* The CA certificate, its Secret and the CA Issuer the chart creates in
cert-manager mode when no issuer is named. */}}
{{- define "stageset.webhookCAName" -}}
{{ include "stageset.fullname" . }}-webhook-ca
{{- end -}}

{{/* Fails rendering on value combinations the controller cannot run with. */}}
{{- define "stageset.validate" -}}
{{- if not (has .Values.webhook.certMode (list "cert-manager" "self-signed")) -}}
{{- fail (printf "webhook.certMode must be cert-manager or self-signed, got %q" .Values.webhook.certMode) -}}
{{- end -}}
{{- if not (has .Values.rollbackStore.backend (list "none" "pvc" "s3")) -}}
{{- fail (printf "rollbackStore.backend must be none, pvc or s3, got %q" .Values.rollbackStore.backend) -}}
{{- end -}}
{{- if eq .Values.rollbackStore.backend "s3" -}}
{{- if not .Values.rollbackStore.s3.endpoint -}}
{{- fail "rollbackStore.s3.endpoint is required when rollbackStore.backend is s3" -}}
{{- end -}}
{{- if not .Values.rollbackStore.s3.bucket -}}
{{- fail "rollbackStore.s3.bucket is required when rollbackStore.backend is s3" -}}
{{- end -}}
{{- end -}}
{{- if and (ne .Values.rollbackStore.backend "s3") (or .Values.rollbackStore.s3.endpoint .Values.rollbackStore.s3.bucket .Values.rollbackStore.s3.existingSecret) -}}
{{- fail (printf "rollbackStore.s3 settings are set but rollbackStore.backend is %q: the PVC and S3 rollback stores are mutually exclusive, set backend: s3 to use S3" .Values.rollbackStore.backend) -}}
{{- end -}}
{{- /* The emptyDirs count against the container's ephemeral storage limit
(the certificate Secret of cert-manager mode is memory-backed and does not). */ -}}
{{- $eph := include "stageset.bytes" .Values.resources.ephemeralStorage | float64 -}}
{{- $dirs := include "stageset.bytes" .Values.tmpSizeLimit | float64 -}}
{{- $certDir := "" -}}
{{- if and .Values.webhook.enabled (eq .Values.webhook.certMode "self-signed") -}}
{{- $certDir = printf " plus %s for the self-signed certificate directory" (include "stageset.certDirSizeLimit" .) -}}
{{- $dirs = addf $dirs (include "stageset.bytes" (include "stageset.certDirSizeLimit" .) | float64) -}}
{{- end -}}
{{- if le $eph $dirs -}}
{{- fail (printf "resources.ephemeralStorage (%v) must exceed the emptyDir volumes it has to hold, tmpSizeLimit (%v)%s: the pod is evicted when its ephemeral storage limit is reached, so raise resources.ephemeralStorage or lower tmpSizeLimit" .Values.resources.ephemeralStorage .Values.tmpSizeLimit $certDir) -}}
{{- end -}}
{{- if lt (int .Values.replicas.max) (int .Values.replicas.min) -}}
{{- fail (printf "replicas.max (%d) must not be below replicas.min (%d)" (int .Values.replicas.max) (int .Values.replicas.min)) -}}
{{- end -}}
{{- if and (gt (int .Values.replicas.max) 1) (not .Values.controller.leaderElect) -}}
{{- fail "controller.leaderElect must be true when more than one replica can run (replicas.max > 1)" -}}
{{- end -}}
{{- if and .Values.mcp.allowMutations (not .Values.mcp.enabled) -}}
{{- fail "mcp.allowMutations needs mcp.enabled" -}}
{{- end -}}
{{- end -}}

{{/* One built-in alert of the bundled PrometheusRule (operations spec §7.3). */}}
{{- define "stageset.alert" -}}
- alert: {{ .alert }}
  expr: {{ .expr | quote }}
  for: {{ .for }}
  labels:
    {{- toYaml (merge (dict "severity" .severity) .extra) | nindent 4 }}
  annotations:
    summary: {{ .summary | quote }}
    description: {{ .description | quote }}
    {{ .runbookKey }}: {{ .runbook | quote }}
{{- end -}}

{{/* A Kubernetes quantity (e.g. 256Mi, 1G, 500) in bytes, for comparisons. */}}
{{- define "stageset.bytes" -}}
{{- $q := toString . -}}
{{- $units := list (list "Ki" 1024.0) (list "Mi" 1048576.0) (list "Gi" 1073741824.0) (list "Ti" 1099511627776.0) (list "k" 1000.0) (list "M" 1000000.0) (list "G" 1000000000.0) (list "T" 1000000000000.0) -}}
{{- $factor := 1.0 -}}
{{- $done := false -}}
{{- range $units -}}
{{- if and (not $done) (hasSuffix (index . 0) $q) -}}
{{- $q = trimSuffix (index . 0) $q -}}
{{- $factor = index . 1 -}}
{{- $done = true -}}
{{- end -}}
{{- end -}}
{{- if not (regexMatch "^[0-9]+(\\.[0-9]+)?$" $q) -}}
{{- fail (printf "%q is not a Kubernetes quantity this chart understands (use Ki, Mi, Gi, Ti, k, M, G, T or plain bytes)" (toString .)) -}}
{{- end -}}
{{- mulf (float64 $q) $factor -}}
{{- end -}}
