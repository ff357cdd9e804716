#!/bin/sh
# Puts the replica's model into the cache volume, once. Run by the replica pods' fetch-model init
# container (rendered from replica.model.source); skipped when the directory already holds this
# source (its marker file names the source's identity). Downloads go to a directory of their own
# next to the target and are renamed into place only when complete, so a pod killed mid-download
# leaves no half model behind, and replicas sharing one claim (cache.type sharedClaim) never see
# each other's partial copies: the first complete rename wins, the others discard theirs.
#
# Environment (set by the chart):
#   FRAMECAST_MODEL_DIR      where the model must end up (on the cache volume)
#   FRAMECAST_MODEL_KIND     huggingface | url | s3
#   FRAMECAST_MODEL_SOURCE   the source's identity (written to the marker)
#   plus what fetch_model.py (huggingface, url) or the AWS CLI (s3) reads.
set -eu

dir=${FRAMECAST_MODEL_DIR:?}
kind=${FRAMECAST_MODEL_KIND:?}
identity=${FRAMECAST_MODEL_SOURCE:?}
marker="$dir/.framecast-source"
here=$(dirname "$0")

present() {
  [ -f "$marker" ] && [ "$(cat "$marker")" = "$identity" ]
}

if present; then
  echo "fetch-model: $dir already holds $identity; nothing to fetch"
  exit 0
fi

parent=$(dirname "$dir")
mkdir -p "$parent"
tmp="$parent/.partial-$(basename "$dir")-${HOSTNAME:-pod}-$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

echo "fetch-model: fetching $identity into $dir"
case "$kind" in
  huggingface|url)
    python3 "$here/fetch_model.py" "$tmp"
    ;;
  s3)
    # Credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from a Secret, or the pod's identity
    # (IRSA, EKS Pod Identity) through its ServiceAccount.
    if [ -n "${FRAMECAST_S3_ENDPOINT_URL:-}" ]; then
      aws s3 sync --only-show-errors --endpoint-url "$FRAMECAST_S3_ENDPOINT_URL" "${FRAMECAST_S3_URI:?}" "$tmp"
    else
      aws s3 sync --only-show-errors "${FRAMECAST_S3_URI:?}" "$tmp"
    fi
    ;;
  *)
    echo "fetch-model: unknown source kind '$kind'" >&2
    exit 2
    ;;
esac

if [ ! -f "$tmp/model_index.json" ]; then
  echo "fetch-model: $identity holds no model_index.json at its top (nor in a single top-level directory): not a diffusers model directory" >&2
  exit 1
fi
printf '%s' "$identity" > "$tmp/.framecast-source"

if [ -e "$dir" ]; then
  if present; then
    echo "fetch-model: another pod put $identity in place first; discarding this copy"
    exit 0
  fi
  # Something without this source's marker (an interrupted copy made by hand, an older layout).
  stale="$parent/.stale-$(basename "$dir")-$$"
  mv -T "$dir" "$stale"
  rm -rf "$stale"
fi
if ! mv -T "$tmp" "$dir"; then
  present && exit 0
  echo "fetch-model: cannot move the fetched model to $dir" >&2
  exit 1
fi
echo "fetch-model: $identity is in $dir"
