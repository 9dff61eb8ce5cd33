{{- define "tollway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tollway.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tollway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tollway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tollway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tollway.labels" -}}
helm.sh/chart: {{ include "tollway.chart" . }}
{{ include "tollway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "tollway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tollway.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* "true" when the chart provides Redis: the bundled one or an external URL or Secret. */}}
{{- define "tollway.redis.provided" -}}
{{- if or .Values.redis.enabled .Values.externalRedis.url .Values.externalRedis.existingSecret -}}
true
{{- end -}}
{{- end -}}

{{/* The bundled Redis's name (its Service and its Secret), as charts/redis names it. */}}
{{- define "tollway.redis.bundledName" -}}
{{- $name := printf "%s-redis" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- with .Values.redis.fullnameOverride -}}
{{- $name = . | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{/* Its URL; with auth, the password from the pod's REDIS_PASSWORD (Kubernetes expands
$(VAR) in an env value from the variables listed before it). */}}
{{- define "tollway.redis.bundledUrl" -}}
{{- $auth := ternary ":$(REDIS_PASSWORD)@" "" (.Values.redis.auth.enabled | default false) -}}
{{- printf "redis://%s%s:%v/0" $auth (include "tollway.redis.bundledName" .) (.Values.redis.port | default 6379) -}}
{{- end -}}

{{/* The most pods there can be at once: replicaCount, or the autoscaler's maximum. */}}
{{- define "tollway.maxReplicas" -}}
{{- if .Values.autoscaling.enabled -}}
{{- .Values.autoscaling.maxReplicas | int -}}
{{- else -}}
{{- .Values.replicaCount | int -}}
{{- end -}}
{{- end -}}

{{/* Refuse what cannot work; rendered by the Deployment, so `helm template` and `helm
install` fail with the reason. */}}
{{- define "tollway.validate" -}}
{{- if and .Values.redis.enabled (or .Values.externalRedis.url .Values.externalRedis.existingSecret) -}}
{{- fail "tollway: choose one Redis: redis.enabled (the bundled one) or externalRedis, not both" -}}
{{- end -}}
{{- $state := (.Values.gateway | default dict).state | default dict -}}
{{- $ownRedis := eq (toString ($state.backend | default "memory")) "redis" -}}
{{- $max := include "tollway.maxReplicas" . | int -}}
{{- if and (gt $max 1) (not (include "tollway.redis.provided" .)) (not $ownRedis) -}}
{{- fail (printf "tollway: %d replicas (replicaCount or autoscaling.maxReplicas) need Redis for shared state (budgets, rate limits, sessions, breakers): set redis.enabled=true, externalRedis.url or externalRedis.existingSecret (or gateway.state.backend=redis with your own state.redis.url)" $max) -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (.Values.autoscaling.minReplicas | int) (.Values.autoscaling.maxReplicas | int)) -}}
{{- fail "tollway: autoscaling.minReplicas is above autoscaling.maxReplicas" -}}
{{- end -}}
{{- end -}}

{{/* gateway.yaml: the `gateway` value with what the chart owns set over it. */}}
{{- define "tollway.config" -}}
{{- $cfg := deepCopy (.Values.gateway | default dict) -}}
{{- if hasKey ($cfg.retries | default dict) "true" -}}
{{- fail "tollway: gateway.retries has a key `true`: Helm's YAML reads a bare `on:` as a boolean; quote it: \"on\": [connect, timeout]" -}}
{{- end -}}
{{- $server := get $cfg "server" | default dict -}}
{{- $_ := set $server "host" "0.0.0.0" -}}
{{- $_ := set $server "port" (.Values.containerPort | int) -}}
{{- if eq (.Values.adminPort | int) (.Values.containerPort | int) -}}
{{- fail "tollway: adminPort must differ from containerPort: the admin listener has a port of its own" -}}
{{- end -}}
{{- $admin := get $server "admin" | default dict -}}
{{- $_ := set $admin "enabled" true -}}
{{- $_ := set $admin "host" "0.0.0.0" -}}
{{- $_ := set $admin "port" (.Values.adminPort | int) -}}
{{- $_ := set $server "admin" $admin -}}
{{- $_ := set $cfg "server" $server -}}
{{- if include "tollway.redis.provided" . -}}
{{- $state := get $cfg "state" | default dict -}}
{{- $redis := get $state "redis" | default dict -}}
{{- $_ := set $redis "url" "${TOLLWAY_REDIS_URL}" -}}
{{- $_ := set $state "backend" "redis" -}}
{{- $_ := set $state "redis" $redis -}}
{{- $_ := set $cfg "state" $state -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}
