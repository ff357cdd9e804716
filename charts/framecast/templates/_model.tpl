{{/* ---- The replicas' model (replica.model): where it comes from, the cache volume it is
     fetched into, and the init containers that fetch and verify it. ---- */}}

{{/* Where the image built from docker/replica.Dockerfile carries the tiny test model. */}}
{{- define "framecast.model.bundledPath" -}}/opt/framecast/models/wan-tiny{{- end -}}
{{/* Where the fetch scripts are mounted in the downloader container. */}}
{{- define "framecast.model.scriptsDir" -}}/opt/framecast-fetch{{- end -}}
{{/* Where the downloader mounts the cache volume. */}}
{{- define "framecast.model.cacheDir" -}}/cache{{- end -}}
{{- define "framecast.model.scriptsName" -}}{{ include "framecast.fullname" . }}-model-fetch{{- end -}}

{{/* generator.model_path: the image's own copy for `bundled`, else replica.model.path. */}}
{{- define "framecast.model.path" -}}
{{- if eq .Values.replica.model.source.kind "bundled" -}}
{{- include "framecast.model.bundledPath" . -}}
{{- else -}}
{{- .Values.replica.model.path -}}
{{- end -}}
{{- end -}}

{{/* "true" when an init container downloads the model into the cache volume. */}}
{{- define "framecast.model.downloads" -}}
{{- if has .Values.replica.model.source.kind (list "huggingface" "url" "s3") }}true{{ end -}}
{{- end -}}

{{/* Fails rendering on a source or cache missing what it needs. */}}
{{- define "framecast.model.validate" -}}
{{- $m := .Values.replica.model -}}
{{- $s := $m.source -}}
{{- if and (eq $s.kind "huggingface") (not $s.huggingface.repo) -}}
{{- fail "replica.model.source.kind is huggingface but replica.model.source.huggingface.repo is empty: name the repository, e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers" -}}
{{- end -}}
{{- if and (eq $s.kind "url") (not $s.url.url) (not $s.url.existingSecret) -}}
{{- fail "replica.model.source.kind is url but neither replica.model.source.url.url nor url.existingSecret is set: give the archive's URL (tar or tar.gz), or a Secret holding it (for presigned URLs)" -}}
{{- end -}}
{{- if and (eq $s.kind "url") $s.url.url $s.url.existingSecret -}}
{{- fail "replica.model.source.url: set url or existingSecret, not both" -}}
{{- end -}}
{{- if and (eq $s.kind "s3") (not $s.s3.uri) -}}
{{- fail "replica.model.source.kind is s3 but replica.model.source.s3.uri (s3://bucket/prefix) is empty" -}}
{{- end -}}
{{- if and (eq $s.kind "existingClaim") (not $s.existingClaim.claimName) -}}
{{- fail "replica.model.source.kind is existingClaim but replica.model.source.existingClaim.claimName is empty: name a ReadOnlyMany claim holding the model" -}}
{{- end -}}
{{- if and (eq $s.kind "hostPath") (not $s.hostPath.path) -}}
{{- fail "replica.model.source.kind is hostPath but replica.model.source.hostPath.path is empty" -}}
{{- end -}}
{{- if and (include "framecast.model.downloads" .) (eq $m.cache.type "sharedClaim") (not $m.cache.claimName) -}}
{{- fail "replica.model.cache.type is sharedClaim but replica.model.cache.claimName is empty: name a ReadWriteMany claim the replicas share" -}}
{{- end -}}
{{- end -}}

{{/* The source's identity, written to the marker file next to the fetched model: the fetch is
     skipped while the marker matches. A URL's query is left out (a presigned URL is signed
     anew without the archive changing; set sha256 to tell archives apart). */}}
{{- define "framecast.model.identity" -}}
{{- $s := .Values.replica.model.source -}}
{{- if eq $s.kind "huggingface" -}}
{{- dict "kind" "huggingface" "repo" $s.huggingface.repo "revision" $s.huggingface.revision "include" $s.huggingface.include "endpoint" $s.huggingface.endpoint | toJson -}}
{{- else if eq $s.kind "url" -}}
{{- if $s.url.url -}}
{{- $u := urlParse $s.url.url -}}
{{- dict "kind" "url" "url" (printf "%s://%s%s" $u.scheme $u.host $u.path) "sha256" $s.url.sha256 | toJson -}}
{{- else -}}
{{- dict "kind" "url" "secret" (printf "%s/%s" $s.url.existingSecret $s.url.existingSecretKey) "sha256" $s.url.sha256 | toJson -}}
{{- end -}}
{{- else if eq $s.kind "s3" -}}
{{- dict "kind" "s3" "uri" $s.s3.uri "endpointUrl" $s.s3.endpointUrl | toJson -}}
{{- end -}}
{{- end -}}

{{/* The model's directory on the cache volume: one per source identity, so a claim shared by
     replicas (or kept across a source change) never mixes two models. */}}
{{- define "framecast.model.cacheKey" -}}
{{- printf "%s-%s" .Values.replica.model.source.kind (include "framecast.model.identity" . | sha256sum | trunc 12) -}}
{{- end -}}

{{/* The replica container's model mount (none for bundled and none). */}}
{{- define "framecast.model.volumeMount" -}}
{{- $s := .Values.replica.model.source -}}
{{- if include "framecast.model.downloads" . }}
- name: model-cache
  mountPath: {{ .Values.replica.model.path }}
  subPath: {{ include "framecast.model.cacheKey" . }}
  readOnly: true
{{- else if eq $s.kind "existingClaim" }}
- name: model
  mountPath: {{ .Values.replica.model.path }}
  {{- with $s.existingClaim.subPath }}
  subPath: {{ . }}
  {{- end }}
  readOnly: true
{{- else if eq $s.kind "hostPath" }}
- name: model
  mountPath: {{ .Values.replica.model.path }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* The pod's model volumes (a claim per replica comes from volumeClaimTemplates instead). */}}
{{- define "framecast.model.volumes" -}}
{{- $m := .Values.replica.model -}}
{{- if include "framecast.model.downloads" . }}
- name: model-fetch
  configMap:
    name: {{ include "framecast.model.scriptsName" . }}
{{- if eq $m.cache.type "sharedClaim" }}
- name: model-cache
  persistentVolumeClaim:
    claimName: {{ $m.cache.claimName }}
{{- else if eq $m.cache.type "emptyDir" }}
- name: model-cache
  emptyDir:
    sizeLimit: {{ $m.cache.size }}
{{- end }}
{{- else if eq $m.source.kind "existingClaim" }}
- name: model
  persistentVolumeClaim:
    claimName: {{ $m.source.existingClaim.claimName }}
    readOnly: true
{{- else if eq $m.source.kind "hostPath" }}
- name: model
  hostPath:
    path: {{ $m.source.hostPath.path }}
    type: Directory
{{- end }}
{{- end -}}

{{/* "true" when each replica gets its own cache claim from volumeClaimTemplates. */}}
{{- define "framecast.model.claimPerReplica" -}}
{{- if and (include "framecast.model.downloads" .) (eq .Values.replica.model.cache.type "pvc") }}true{{ end -}}
{{- end -}}

{{/* The downloader's environment for the source. Credentials only ever come from Secrets. */}}
{{- define "framecast.model.fetchEnv" -}}
{{- $s := .Values.replica.model.source -}}
- name: FRAMECAST_MODEL_KIND
  value: {{ $s.kind | quote }}
- name: FRAMECAST_MODEL_SOURCE
  value: {{ include "framecast.model.identity" . | quote }}
- name: FRAMECAST_MODEL_DIR
  value: {{ printf "%s/%s" (include "framecast.model.cacheDir" .) (include "framecast.model.cacheKey" .) | quote }}
# The root filesystem is read-only: Python's and the AWS CLI's caches go to /tmp.
- name: HOME
  value: /tmp
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- if eq $s.kind "huggingface" }}
- name: HF_REPO
  value: {{ $s.huggingface.repo | quote }}
- name: HF_REVISION
  value: {{ $s.huggingface.revision | quote }}
- name: HF_INCLUDE
  value: {{ join "," $s.huggingface.include | quote }}
{{- with $s.huggingface.endpoint }}
- name: HF_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with $s.huggingface.token.existingSecret }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $s.huggingface.token.key }}
{{- end }}
{{- else if eq $s.kind "url" }}
{{- if $s.url.url }}
- name: FRAMECAST_MODEL_URL
  value: {{ $s.url.url | quote }}
{{- else }}
- name: FRAMECAST_MODEL_URL
  valueFrom:
    secretKeyRef:
      name: {{ $s.url.existingSecret }}
      key: {{ $s.url.existingSecretKey }}
{{- end }}
{{- with $s.url.sha256 }}
- name: FRAMECAST_MODEL_SHA256
  value: {{ . | quote }}
{{- end }}
{{- else if eq $s.kind "s3" }}
- name: FRAMECAST_S3_URI
  value: {{ $s.s3.uri | quote }}
{{- with $s.s3.endpointUrl }}
- name: FRAMECAST_S3_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with $s.s3.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- with $s.s3.credentials.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $s.s3.credentials.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $s.s3.credentials.secretAccessKeyKey }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The downloader's image: the AWS CLI for s3, else the Python image (stdlib only). */}}
{{- define "framecast.model.fetchImage" -}}
{{- $d := .Values.replica.model.downloader -}}
{{- $i := ternary $d.s3Image $d.image (eq .Values.replica.model.source.kind "s3") -}}
{{- printf "%s:%s" $i.repository $i.tag -}}{{- with $i.digest }}@{{ . }}{{ end -}}
{{- end -}}

{{/* The chart's model init containers: model-fetch (download sources) fills the cache volume,
     model-check runs the replica's own --check-model on what the replica will load, with the
     replica's config and environment. */}}
{{- define "framecast.model.initContainers" -}}
{{- include "framecast.model.validate" . -}}
{{- $r := .Values.replica -}}
{{- $m := $r.model -}}
{{- if include "framecast.model.downloads" . }}
- name: model-fetch
  image: {{ include "framecast.model.fetchImage" . }}
  imagePullPolicy: {{ ternary $m.downloader.s3Image.pullPolicy $m.downloader.image.pullPolicy (eq $m.source.kind "s3") }}
  command: ["sh", "{{ include "framecast.model.scriptsDir" . }}/fetch-model.sh"]
  env:
    {{- include "framecast.model.fetchEnv" . | nindent 4 }}
  resources:
    {{- toYaml $m.downloader.resources | nindent 4 }}
  {{- with $r.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: model-fetch
      mountPath: {{ include "framecast.model.scriptsDir" . }}
      readOnly: true
    - name: model-cache
      mountPath: {{ include "framecast.model.cacheDir" . }}
    - name: tmp
      mountPath: /tmp
{{- end }}
{{- if and $m.check.enabled (ne $r.generator.kind "mock") (ne $m.source.kind "none") }}
- name: model-check
  image: {{ include "framecast.image" (dict "image" $r.image "ctx" .) }}
  imagePullPolicy: {{ $r.image.pullPolicy }}
  args: ["--config", "/etc/framecast/replica.yaml", "--check-model"]
  env:
    {{- include "framecast.replica.env" . | nindent 4 }}
  resources:
    {{- toYaml $m.check.resources | nindent 4 }}
  {{- with $r.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: config
      mountPath: /etc/framecast
      readOnly: true
    - name: tmp
      mountPath: /tmp
    {{- with include "framecast.model.volumeMount" . | trim }}{{ . | nindent 4 }}{{ end }}
{{- end }}
{{- end -}}

{{/* ---- Replica autoscaling (replica.autoscaling): an HPA or a KEDA ScaledObject ---- */}}

{{/* The most replicas the chart allows autoscaling to (each is a router probe target). */}}
{{- define "framecast.autoscaling.ceiling" -}}64{{- end -}}

{{/* How many replicas the router lists: every pod the StatefulSet may have. */}}
{{- define "framecast.replica.listed" -}}
{{- $a := .Values.replica.autoscaling -}}
{{- ternary (int $a.maxReplicas) (int .Values.replica.count) $a.enabled -}}
{{- end -}}

{{- define "framecast.autoscaling.validate" -}}
{{- $r := .Values.replica -}}
{{- $a := $r.autoscaling -}}
{{- if le (int $r.terminationGracePeriodSeconds) (int $r.shutdownGraceSeconds) -}}
{{- fail (printf "replica.terminationGracePeriodSeconds (%d) must exceed replica.shutdownGraceSeconds (%d): on SIGTERM (a scale-down, a drain, an upgrade) the replica lets live sessions finish for shutdownGraceSeconds, and Kubernetes kills it at the grace period" (int $r.terminationGracePeriodSeconds) (int $r.shutdownGraceSeconds)) -}}
{{- end -}}
{{- if $a.enabled -}}
{{- if gt (int $a.maxReplicas) (int (include "framecast.autoscaling.ceiling" .)) -}}
{{- fail (printf "replica.autoscaling.maxReplicas (%d) is above %s: the router's config lists (and probes) every replica up to maxReplicas" (int $a.maxReplicas) (include "framecast.autoscaling.ceiling" .)) -}}
{{- end -}}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) -}}
{{- fail (printf "replica.autoscaling.minReplicas (%d) exceeds maxReplicas (%d)" (int $a.minReplicas) (int $a.maxReplicas)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Scale-up fast, scale-down slow: a removed replica drains its sessions for up to
     shutdownGraceSeconds, so one at a time, after the load stayed low for the window. */}}
{{- define "framecast.autoscaling.behavior" -}}
{{- $a := .Values.replica.autoscaling -}}
scaleUp:
  stabilizationWindowSeconds: {{ $a.scaleUp.stabilizationWindowSeconds }}
  policies:
    - type: Pods
      value: {{ $a.scaleUp.podsPerPeriod }}
      periodSeconds: {{ $a.scaleUp.periodSeconds }}
scaleDown:
  stabilizationWindowSeconds: {{ $a.scaleDown.stabilizationWindowSeconds }}
  policies:
    - type: Pods
      value: {{ $a.scaleDown.podsPerPeriod }}
      periodSeconds: {{ $a.scaleDown.periodSeconds }}
{{- end -}}

{{/* The PromQL selector of this release's replica pods. */}}
{{- define "framecast.autoscaling.selector" -}}
namespace="{{ .Release.Namespace }}",pod=~"{{ include "framecast.replica.name" . }}-[0-9]+"
{{- end -}}

{{/* KEDA's query: sessions running plus sessions waiting for a worker, over the release's
     replicas; KEDA divides it by the threshold (sessions one replica should carry). */}}
{{- define "framecast.autoscaling.kedaQuery" -}}
{{- $k := .Values.replica.autoscaling.keda -}}
{{- if $k.query -}}
{{- $k.query -}}
{{- else -}}
{{- $sel := include "framecast.autoscaling.selector" . -}}
sum(framecast_sessions_active{ {{- $sel -}} }) + sum(framecast_queue_depth{ {{- $sel -}} })
{{- end -}}
{{- end -}}

{{/* The replica's environment, shared by the replica container and model-check (which loads
     the same config the same way). */}}
{{- define "framecast.replica.env" -}}
{{- $r := .Values.replica -}}
- name: RUST_LOG
  value: {{ $r.logLevel | quote }}
- name: FRAMECAST_LOG_FORMAT
  value: {{ $r.logFormat | quote }}
# store.state_secret: every replica signs continuation states with the same key.
- name: FRAMECAST_REPLICA__STORE__STATE_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "framecast.replica.stateSecretName" . }}
      key: {{ $r.stateSecret.key }}
{{- with include "framecast.store.env" . | trim }}{{ . | nindent 0 }}{{ end }}
{{- if $r.auth.required }}
{{- with include "framecast.auth.env" (dict "ctx" . "prefix" "FRAMECAST_REPLICA__SERVER") | trim }}{{ . | nindent 0 }}{{ end }}
{{- end }}
# The root filesystem is read-only: GStreamer's plugin registry, CUDA's JIT cache and
# other per-user caches go to the /tmp emptyDir.
- name: HOME
  value: /tmp
- name: XDG_CACHE_HOME
  value: /tmp/.cache
- name: GST_REGISTRY
  value: /tmp/.cache/gstreamer-1.0/registry.bin
{{- if gt (int $r.gpus) 0 }}
# The NVIDIA container runtime exposes NVENC only with the `video` capability.
- name: NVIDIA_DRIVER_CAPABILITIES
  value: {{ $r.nvidiaDriverCapabilities | quote }}
{{- end }}
{{- with $r.env }}
{{- toYaml . | nindent 0 }}
{{- end }}
{{- end -}}

{{/* The fetch scripts' ConfigMap data (files/model/), shared with the tests. */}}
{{- define "framecast.model.scripts" -}}
fetch-model.sh: |
  {{- .Files.Get "files/model/fetch-model.sh" | nindent 2 }}
fetch_model.py: |
  {{- .Files.Get "files/model/fetch_model.py" | nindent 2 }}
{{- end -}}
