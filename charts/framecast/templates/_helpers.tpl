{{/* Chart name. */}}
{{- define "framecast.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource name prefix: <release>-framecast unless overridden. */}}
{{- define "framecast.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "framecast.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "framecast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels; pass (dict "ctx" $ "component" "router"). */}}
{{- define "framecast.selectorLabels" -}}
app.kubernetes.io/name: {{ include "framecast.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "framecast.router.name" -}}{{ include "framecast.fullname" . }}-router{{- end -}}
{{- define "framecast.replica.name" -}}{{ include "framecast.fullname" . }}-replica{{- end -}}
{{- define "framecast.replica.headless" -}}{{ include "framecast.fullname" . }}-replica-headless{{- end -}}

{{/* repository@digest when image.digest is set (the tag is then ignored), else
     repository:tag with the tag defaulting to the chart's appVersion. */}}
{{- define "framecast.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* ---- Pod extension hooks and security settings shared by the router and the replicas;
     each takes (dict "ctx" $ "v" <the component's values> "component" "router"). ---- */}}

{{/* Pod labels: the selector labels, then podLabels (never overriding a selector label, so
     Services, PDBs and NetworkPolicies keep selecting the pods). */}}
{{/* The selector labels as JSON (fromJson keeps every value a string); same arguments as
     framecast.selectorLabels. */}}
{{- define "framecast.selectorLabelsJson" -}}
{{- dict "app.kubernetes.io/name" (include "framecast.name" .ctx) "app.kubernetes.io/instance" .ctx.Release.Name "app.kubernetes.io/component" .component | toJson -}}
{{- end -}}

{{- define "framecast.podLabels" -}}
{{- $labels := include "framecast.selectorLabelsJson" . | fromJson -}}
{{- range $k, $v := .v.podLabels | default dict -}}
{{- if not (hasKey $labels $k) }}{{ $_ := set $labels $k $v }}{{ end -}}
{{- end -}}
{{- toYaml $labels -}}
{{- end -}}

{{- define "framecast.serviceAccountName" -}}
{{- $sa := .v.serviceAccount -}}
{{- if $sa.create -}}
{{- $sa.name | default (printf "%s-%s" (include "framecast.fullname" .ctx) .component) -}}
{{- else -}}
{{- $sa.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* Pod-level fields: service account (its token mounted only when asked), pull secrets,
     priority class and the pod securityContext. Indented by the caller. */}}
{{- define "framecast.podSpecCommon" -}}
serviceAccountName: {{ include "framecast.serviceAccountName" . }}
automountServiceAccountToken: {{ .v.serviceAccount.automountToken }}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .v.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* router.affinity plus the router.podAntiAffinity preset (routers on different nodes),
     unless router.affinity sets its own podAntiAffinity. */}}
{{- define "framecast.router.affinity" -}}
{{- $r := .Values.router -}}
{{- $affinity := deepCopy ($r.affinity | default dict) -}}
{{- $preset := $r.podAntiAffinity.preset -}}
{{- if and (ne $preset "none") (not (hasKey $affinity "podAntiAffinity")) -}}
{{- $term := dict "topologyKey" $r.podAntiAffinity.topologyKey "labelSelector" (dict "matchLabels" (include "framecast.selectorLabelsJson" (dict "ctx" . "component" "router") | fromJson)) -}}
{{- if eq $preset "hard" -}}
{{- $_ := set $affinity "podAntiAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (list $term)) -}}
{{- else -}}
{{- $_ := set $affinity "podAntiAffinity" (dict "preferredDuringSchedulingIgnoredDuringExecution" (list (dict "weight" 100 "podAffinityTerm" $term))) -}}
{{- end -}}
{{- end -}}
{{- toYaml $affinity -}}
{{- end -}}

{{/* Replica topology spread: each of replica.topologySpreadConstraints, selecting the
     replica pods unless it names its own labelSelector. */}}
{{- define "framecast.replica.topologySpread" -}}
{{- $list := list -}}
{{- range .Values.replica.topologySpreadConstraints -}}
{{- $c := deepCopy . -}}
{{- if not (hasKey $c "labelSelector") -}}
{{- $_ := set $c "labelSelector" (dict "matchLabels" (include "framecast.selectorLabelsJson" (dict "ctx" $ "component" "replica") | fromJson)) -}}
{{- end -}}
{{- $list = append $list $c -}}
{{- end -}}
{{- with $list }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The user's extra init containers; one without a securityContext gets the component's
     container securityContext, so the pod stays within the restricted profile. Then the
     chart's own (`chart`: a YAML list, e.g. the replica's model-fetch and model-check), which
     run last: a user's container may prepare what they read. */}}
{{- define "framecast.initContainers" -}}
{{- $list := list -}}
{{- range .v.initContainers -}}
{{- $c := deepCopy . -}}
{{- if and (not (hasKey $c "securityContext")) $.v.securityContext -}}
{{- $_ := set $c "securityContext" $.v.securityContext -}}
{{- end -}}
{{- $list = append $list $c -}}
{{- end -}}
{{- with .chart }}{{ $list = concat $list (fromYamlArray .) }}{{ end -}}
{{- with $list }}
initContainers:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The router's config file: FastVideo's router block, replicas from the StatefulSet's stable DNS names. */}}
{{- define "framecast.router.config" -}}
{{- include "framecast.autoscaling.validate" . -}}
{{- $a := .Values.replica.autoscaling -}}
{{- $least := ternary (int $a.minReplicas) (int .Values.replica.count) $a.enabled -}}
{{- if ge (int .Values.replica.primaryIndex) $least -}}
{{- fail (printf "replica.primaryIndex (%d) must be below %s (%d), or -1 for no primary" (int .Values.replica.primaryIndex) (ternary "replica.autoscaling.minReplicas" "replica.count" $a.enabled) $least) -}}
{{- end -}}
{{- $replicas := list -}}
{{- /* With autoscaling the list names every pod the StatefulSet may have (maxReplicas): the
       router probes each, and one that does not exist yet (its DNS name does not resolve) is
       unhealthy and gets no session until it does. */ -}}
{{- range $i, $_ := until (int (include "framecast.replica.listed" .)) -}}
{{- $host := printf "%s-%d.%s.%s.svc.cluster.local" (include "framecast.replica.name" $) $i (include "framecast.replica.headless" $) $.Release.Namespace -}}
{{- $replicas = append $replicas (dict "url" (printf "http://%s:%d" $host (int $.Values.replica.port)) "admin_url" (printf "http://%s:%d" $host (int $.Values.replica.adminPort)) "name" (printf "replica-%d" $i) "primary" (eq $i (int $.Values.replica.primaryIndex)) "weight" 1) -}}
{{- end -}}
{{- $r := .Values.router -}}
{{- include "framecast.ports.check" (dict "what" "router" "port" $r.port "adminPort" $r.adminPort) -}}
{{- $config := dict "router" (dict
  "host" "0.0.0.0"
  "port" (int $r.port)
  "admin_port" (int $r.adminPort)
  "auth" (include "framecast.auth.config" (dict "ctx" . "required" .Values.auth.required) | fromYaml)
  "client_limits" (dict "max_sessions_per_ip" (int $r.clientLimits.maxSessionsPerIp) "new_sessions_per_ip_per_minute" (int $r.clientLimits.newSessionsPerIpPerMinute) "trusted_proxies" $r.clientLimits.trustedProxies)
  "replicas" (ternary (list) $replicas (eq $r.replicaDiscovery "dns"))
  "discovery" (ternary (dict "dns_name" (printf "%s.%s.svc.cluster.local" (include "framecast.replica.headless" .) .Release.Namespace) "port" (int .Values.replica.port) "admin_port" (int .Values.replica.adminPort) "max_replicas" 256) (dict "dns_name" nil) (eq $r.replicaDiscovery "dns"))
  "health_check" (dict "path" $r.healthCheck.path "interval_seconds" $r.healthCheck.intervalSeconds "timeout_seconds" $r.healthCheck.timeoutSeconds "failure_threshold" (int $r.healthCheck.failureThreshold) "recovery_threshold" (int $r.healthCheck.recoveryThreshold))
  "selection" $r.selection
  "connect_timeout_seconds" $r.connectTimeoutSeconds
  "tunnel_idle_timeout_seconds" $r.tunnelIdleTimeoutSeconds
  "shutdown_grace_seconds" (int $r.shutdownGraceSeconds)
  "threads" (int $r.threads)) -}}
{{- toYaml $config -}}
{{- end -}}

{{/* The replica's config file. */}}
{{- /* One worker per GPU: worker i on cuda:i when the pod has GPUs. */ -}}
{{- define "framecast.replica.pool" -}}
{{- $r := .Values.replica -}}
{{- if and (gt (int $r.gpus) 0) (gt (int $r.workers) (int $r.gpus)) -}}
{{- fail (printf "replica.workers (%d) exceeds replica.gpus (%d): each worker needs its own GPU" (int $r.workers) (int $r.gpus)) -}}
{{- end -}}
num_workers: {{ int $r.workers }}
warmup: true
mode: {{ $r.poolMode }}
{{- if gt (int $r.gpus) 0 }}
devices:
{{- range $i := until (int $r.workers) }}
  - cuda:{{ $i }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "framecast.replica.config" -}}
{{- $r := .Values.replica -}}
{{- include "framecast.ports.check" (dict "what" "replica" "port" $r.port "adminPort" $r.adminPort) -}}
{{- $config := dict
  "server" (dict "host" "0.0.0.0" "port" (int $r.port) "admin_port" (int $r.adminPort) "shutdown_grace_seconds" (int $r.shutdownGraceSeconds) "auth" (include "framecast.auth.config" (dict "ctx" . "required" $r.auth.required) | fromYaml))
  "streaming" (dict "max_sessions" (int $r.streaming.maxSessions) "session_timeout_seconds" (int $r.streaming.sessionTimeoutSeconds) "generation_segment_cap" (int $r.streaming.generationSegmentCap) "session_log_dir" (ternary (include "framecast.replica.sessionLogDir" .) nil $r.sessionLogs.enabled) "session_log_max_file_bytes" (include "framecast.replica.sessionLogFileBytes" . | int) "session_log_max_total_bytes" (mul (int $r.sessionLogs.maxTotalMiB) 1048576))
  "prompt" (include "framecast.replica.prompt" . | fromYaml)
  "pool" (include "framecast.replica.pool" . | fromYaml)
  "generator" (dict "kind" $r.generator.kind "device" $r.generator.device "model_path" (include "framecast.model.path" .) "width" (int $r.generator.width) "height" (int $r.generator.height) "fps" (int $r.generator.fps) "frames_per_segment" (int $r.generator.framesPerSegment) "num_inference_steps" (int $r.generator.numInferenceSteps))
  "media" (dict "video_encoder" $r.media.videoEncoder "bitrate_kbps" (int $r.media.bitrateKbps))
  "store" (include "framecast.store.config" . | fromYaml) -}}
{{- toYaml $config -}}
{{- end -}}


{{/* ---- What the replica writes (its root filesystem is read-only): session logs, system
     prompts edited through the admin API, and /tmp. ---- */}}
{{- define "framecast.replica.sessionLogDir" -}}/var/lib/framecast/session-logs{{- end -}}
{{- define "framecast.replica.systemPromptDir" -}}/var/lib/framecast/system-prompts{{- end -}}
{{- define "framecast.replica.sessionLogFileBytes" -}}1048576{{- end -}}

{{/* The session-log emptyDir's sizeLimit: the replica's cap on all logs, plus one open log per
     session that may still grow to its file cap before the next open prunes, plus a margin;
     so the cap, not an eviction, bounds the logs. */}}
{{- define "framecast.replica.sessionLogSizeLimit" -}}
{{- $r := .Values.replica -}}
{{- printf "%dMi" (add (int $r.sessionLogs.maxTotalMiB) (div (mul (int $r.streaming.maxSessions) (include "framecast.replica.sessionLogFileBytes" . | int)) 1048576) 16) -}}
{{- end -}}

{{/* The replica's `prompt` section. Provider keys never go here: each provider names the
     environment variable holding its key (apiKeyEnv, or its preset's), set from a Secret
     with replica.env / replica.envFrom. */}}
{{- define "framecast.replica.prompt" -}}
{{- $p := .Values.replica.prompt -}}
{{- if and $p.enabled (not $p.providers) -}}
{{- fail "replica.prompt.enabled is true but replica.prompt.providers is empty: list at least one provider (the replica refuses to start without one)" -}}
{{- end -}}
{{- $providers := list -}}
{{- range $p.providers -}}
{{- $out := dict "name" .name "model" .model -}}
{{- with .preset }}{{ $_ := set $out "preset" . }}{{ end -}}
{{- with .baseUrl }}{{ $_ := set $out "base_url" . }}{{ end -}}
{{- with .apiKeyEnv }}{{ $_ := set $out "api_key_env" . }}{{ end -}}
{{- if .allowNoKey }}{{ $_ := set $out "allow_no_key" true }}{{ end -}}
{{- $providers = append $providers $out -}}
{{- end -}}
{{- $config := dict "enabled" $p.enabled "providers" $providers "system_prompt_dir" (ternary (include "framecast.replica.systemPromptDir" .) nil $p.writableSystemPrompts) -}}
{{- toYaml $config -}}
{{- end -}}

{{/* Each binary serves clients and admin endpoints on separate ports. */}}
{{- define "framecast.ports.check" -}}
{{- if eq (int .port) (int .adminPort) -}}
{{- fail (printf "%s.adminPort (%d) must differ from %s.port: /status, /metrics and the probes are served on their own listener" .what (int .adminPort) .what) -}}
{{- end -}}
{{- end -}}

{{/* ---- Authentication (auth.*): API keys from a Secret file, JWTs, allowed origins ---- */}}

{{/* Where the API key file, the RS256 public key and the Secrets live. */}}
{{- define "framecast.auth.apiKeysDir" -}}/etc/framecast-auth{{- end -}}
{{- define "framecast.auth.apiKeysFile" -}}/etc/framecast-auth/api-keys{{- end -}}
{{- define "framecast.auth.rs256Dir" -}}/etc/framecast-jwt{{- end -}}
{{- define "framecast.auth.rs256File" -}}/etc/framecast-jwt/public.pem{{- end -}}
{{- define "framecast.auth.secretName" -}}
{{- .Values.auth.existingSecret | default (printf "%s-auth" (include "framecast.fullname" .)) -}}
{{- end -}}

{{/* "true" when API keys come from a Secret (existing or created by the chart). */}}
{{- define "framecast.auth.hasApiKeys" -}}
{{- if or .Values.auth.existingSecret .Values.auth.apiKeys }}true{{ end -}}
{{- end -}}
{{- define "framecast.auth.hasRs256" -}}
{{- $k := .Values.auth.jwt.rs256PublicKey -}}
{{- if or $k.existingSecret $k.existingConfigMap }}true{{ end -}}
{{- end -}}

{{/* Fails rendering when authentication is required but no credential is configured. */}}
{{- define "framecast.auth.validate" -}}
{{- $a := .Values.auth -}}
{{- if and $a.existingSecret $a.apiKeys -}}
{{- fail "auth.existingSecret and auth.apiKeys are both set: give the API keys either in an existing Secret (key `api-keys`) or as auth.apiKeys, not both" -}}
{{- end -}}
{{- if and $a.jwt.rs256PublicKey.existingSecret $a.jwt.rs256PublicKey.existingConfigMap -}}
{{- fail "auth.jwt.rs256PublicKey: set existingSecret or existingConfigMap, not both" -}}
{{- end -}}
{{- $credential := or (include "framecast.auth.hasApiKeys" .) $a.jwt.hs256Secret.existingSecret (include "framecast.auth.hasRs256" .) -}}
{{- if and (or $a.required .Values.replica.auth.required) (not $credential) -}}
{{- fail "authentication is on (auth.required=true, the default) but no credential is configured. Supply API keys with auth.existingSecret=<Secret with key `api-keys`, one key of at least 16 characters per line> or auth.apiKeys={key1,...} (the chart creates the Secret), and/or JWT verification with auth.jwt.hs256Secret.existingSecret or auth.jwt.rs256PublicKey.existingSecret/existingConfigMap; or set auth.required=false (and replica.auth.required=false) to run without authentication" -}}
{{- end -}}
{{- end -}}

{{/* The `auth` section of a config file; pass (dict "ctx" $ "required" bool). Credentials
     are wired only where authentication is required (the replica's defaults to off):
     API keys as a mounted file, the HS256 secret by environment variable, the RS256 key as
     a mounted file. Allowed origins apply either way: both binaries check Origin. */}}
{{- define "framecast.auth.config" -}}
{{- $ctx := .ctx -}}
{{- include "framecast.auth.validate" $ctx -}}
{{- $a := $ctx.Values.auth -}}
{{- $jwt := dict "leeway_seconds" (int $a.jwt.leewaySeconds) -}}
{{- $config := dict "required" .required "allowed_origins" $a.allowedOrigins -}}
{{- if .required -}}
{{- if include "framecast.auth.hasApiKeys" $ctx -}}
{{- $_ := set $config "api_keys_file" (include "framecast.auth.apiKeysFile" $ctx) -}}
{{- end -}}
{{- if include "framecast.auth.hasRs256" $ctx -}}
{{- $_ := set $jwt "rs256_public_key_file" (include "framecast.auth.rs256File" $ctx) -}}
{{- end -}}
{{- with $a.jwt.issuer }}{{ $_ := set $jwt "issuer" . }}{{ end -}}
{{- with $a.jwt.audience }}{{ $_ := set $jwt "audience" . }}{{ end -}}
{{- end -}}
{{- $_ := set $config "jwt" $jwt -}}
{{- toYaml $config -}}
{{- end -}}

{{/* Environment of a container checking credentials; pass (dict "ctx" $ "prefix" "FRAMECAST_ROUTER__ROUTER"). */}}
{{- define "framecast.auth.env" -}}
{{- with .ctx.Values.auth.jwt.hs256Secret.existingSecret }}
- name: {{ $.prefix }}__AUTH__JWT__HS256_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.ctx.Values.auth.jwt.hs256Secret.key }}
{{- end }}
{{- end -}}

{{- define "framecast.auth.volumeMounts" -}}
{{- if include "framecast.auth.hasApiKeys" . }}
- name: api-keys
  mountPath: {{ include "framecast.auth.apiKeysDir" . }}
  readOnly: true
{{- end }}
{{- if include "framecast.auth.hasRs256" . }}
- name: jwt-public-key
  mountPath: {{ include "framecast.auth.rs256Dir" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "framecast.auth.volumes" -}}
{{- if include "framecast.auth.hasApiKeys" . }}
- name: api-keys
  secret:
    secretName: {{ include "framecast.auth.secretName" . }}
    items:
      - key: api-keys
        path: api-keys
{{- end }}
{{- $k := .Values.auth.jwt.rs256PublicKey -}}
{{- if $k.existingSecret }}
- name: jwt-public-key
  secret:
    secretName: {{ $k.existingSecret }}
    items:
      - key: {{ $k.key }}
        path: public.pem
{{- else if $k.existingConfigMap }}
- name: jwt-public-key
  configMap:
    name: {{ $k.existingConfigMap }}
    items:
      - key: {{ $k.key }}
        path: public.pem
{{- end }}
{{- end -}}

{{/* Rolls the pods when the chart-created API key Secret changes (keys are read at start-up). */}}
{{- define "framecast.auth.checksum" -}}
{{- dict "apiKeys" .Values.auth.apiKeys "existingSecret" .Values.auth.existingSecret "jwt" .Values.auth.jwt | toJson | sha256sum -}}
{{- end -}}

{{/* ---- The replicas' continuation-state HMAC secret (store.state_secret) ---- */}}
{{- define "framecast.replica.stateSecretName" -}}
{{- .Values.replica.stateSecret.existingSecret | default (printf "%s-replica-state" (include "framecast.fullname" .)) -}}
{{- end -}}

{{/* Marks the Services that carry the admin port (the ServiceMonitors select them). */}}
{{- define "framecast.adminServiceLabel" -}}
framecast.io/admin: "true"
{{- end -}}

{{/* ---- Where the replicas keep continuation states (store.*): their memory, the chart's
     Redis (redis.*) or an external one (externalRedis.*) ---- */}}
{{- define "framecast.redis.name" -}}{{ include "framecast.fullname" . }}-redis{{- end -}}
{{- define "framecast.redis.port" -}}6379{{- end -}}

{{- define "framecast.redis.image" -}}
{{- $i := .Values.redis.image -}}
{{- printf "%s:%s" $i.repository $i.tag -}}{{- with $i.digest }}@{{ . }}{{ end -}}
{{- end -}}

{{/* Fails rendering on contradictory Redis settings. */}}
{{- define "framecast.store.validate" -}}
{{- $x := .Values.externalRedis -}}
{{- if and .Values.redis.enabled (or $x.url $x.existingSecret) -}}
{{- fail "redis.enabled and externalRedis are both set: the replicas share one Redis, either the chart's own (redis.enabled=true) or an external one (externalRedis.url or externalRedis.existingSecret), not both" -}}
{{- end -}}
{{- if and $x.url $x.existingSecret -}}
{{- fail "externalRedis.url and externalRedis.existingSecret are both set: give the external Redis URL either in values (without credentials) or whole in an existing Secret, not both" -}}
{{- end -}}
{{- $p := .Values.redis -}}
{{- if and $p.enabled $p.persistence.enabled (not $p.save) (not $p.appendonly) -}}
{{- fail "redis.persistence.enabled is true but Redis writes nothing to /data with redis.save \"\" and redis.appendonly false: set redis.save (e.g. \"3600 1\") or redis.appendonly=true, or leave redis.persistence off (the data is a cache)" -}}
{{- end -}}
{{- end -}}

{{/* "true" when the replicas keep continuation states in Redis. */}}
{{- define "framecast.store.usesRedis" -}}
{{- if or .Values.redis.enabled .Values.externalRedis.url .Values.externalRedis.existingSecret }}true{{ end -}}
{{- end -}}

{{/* The chart's Redis as a URL; pass (dict "ctx" $ "password" "$(REDIS_PASSWORD)" or ""). The
     password as Redis's `default` user (AUTH default <password>, Redis 6 and later). */}}
{{- define "framecast.redis.url" -}}
redis://{{ with .password }}default:{{ . }}@{{ end }}{{ include "framecast.redis.name" .ctx }}:{{ include "framecast.redis.port" .ctx }}/0
{{- end -}}

{{/* The `store` section of the replica's config. A URL with a password never goes here: it
     reaches the pod as FRAMECAST_REPLICA__STORE__REDIS__URL (framecast.store.env). */}}
{{- define "framecast.store.config" -}}
{{- include "framecast.store.validate" . -}}
{{- $s := .Values.replica.store -}}
{{- $config := dict "backend" "memory" "ttl_seconds" (int $s.ttlSeconds) -}}
{{- if include "framecast.store.usesRedis" . -}}
{{- $redis := dict "key_prefix" (default (printf "%s:" (include "framecast.fullname" .)) $s.redis.keyPrefix) "timeout_ms" (int $s.redis.timeoutMs) -}}
{{- if .Values.redis.enabled -}}
{{- $_ := set $redis "url" (include "framecast.redis.url" (dict "ctx" . "password" "")) -}}
{{- else if .Values.externalRedis.url -}}
{{- $_ := set $redis "url" .Values.externalRedis.url -}}
{{- end -}}
{{- $_ := set $config "backend" "redis" -}}
{{- $_ := set $config "redis" $redis -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/* The replica container's Redis environment: the password of the chart's Redis composed into
     the URL by Kubernetes ($(VAR) substitution), or an external URL from a Secret. */}}
{{- define "framecast.store.env" -}}
{{- if and .Values.redis.enabled .Values.redis.auth.existingSecret }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.auth.existingSecret }}
      key: {{ .Values.redis.auth.key }}
# store.redis.url with the password (Kubernetes substitutes the variable above).
- name: FRAMECAST_REPLICA__STORE__REDIS__URL
  value: {{ include "framecast.redis.url" (dict "ctx" . "password" "$(REDIS_PASSWORD)") | quote }}
{{- else if .Values.externalRedis.existingSecret }}
# store.redis.url, credentials included, from the Secret.
- name: FRAMECAST_REPLICA__STORE__REDIS__URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalRedis.existingSecret }}
      key: {{ .Values.externalRedis.key }}
{{- end }}
{{- end -}}
