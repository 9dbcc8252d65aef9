#!/usr/bin/env bash
# Build keel's image on a python base made from Debian's packages, for machines that reach
# Debian's mirrors but no container registry. Installs nothing: podman, runc and mmdebstrap
# must be there (apt-get install podman runc mmdebstrap).
#
#   scripts/container-base.sh            prints the image's name on its last line of output
#
# The base (mmdebstrap minbase bookworm with python3, python3-venv and ca-certificates) is
# cached as a tarball and imported once; keel's image is tagged with a hash of everything the
# build copies, and reused while that hash stands. Package downloads inside the build trust the
# machine's CA bundle, mounted read-only over the image's.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${KEEL_CONTAINER_CACHE:-/var/tmp/keel-container}"
BASE_TAG="localhost/keel-base:bookworm"
BUNDLE="${KEEL_CONTAINER_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
# This machine's podman: crun and the default ulimits are refused, cgroups are managed by hand.
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)
LIMITS=(--network host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

missing=()
for program in podman runc mmdebstrap; do
    command -v "$program" >/dev/null 2>&1 || missing+=("$program")
done
if ((${#missing[@]})); then
    echo "container-base: missing ${missing[*]} (apt-get install podman runc mmdebstrap)" >&2
    exit 3
fi

mkdir -p "$CACHE"
# One build at a time on this machine: concurrent runs wait, then reuse what the first built.
exec 9>"$CACHE/lock"
flock 9
if ! "${PODMAN[@]}" image exists "$BASE_TAG"; then
    if [[ ! -s "$CACHE/base.tar" ]]; then
        echo "container-base: building the base with mmdebstrap" >&2
        # Downloading the packages takes a few minutes on a slow link; once per machine.
        mmdebstrap --quiet --format=tar --variant=minbase \
            --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            --include=python3,python3-venv,ca-certificates bookworm "$CACHE/base.part.tar" >&2
        mv "$CACHE/base.part.tar" "$CACHE/base.tar"
    fi
    "${PODMAN[@]}" import --quiet --change 'CMD ["python3"]' "$CACHE/base.tar" "$BASE_TAG" >&2
fi

# Everything the build copies (see .dockerignore), and the base it builds on.
hash=$(
    {
        "${PODMAN[@]}" image inspect --format '{{.Id}}' "$BASE_TAG"
        find Dockerfile .dockerignore requirements-tools.txt pyproject.toml uv.lock README.md \
            LICENSE src -type f ! -path '*/__pycache__/*' ! -name '*.py[cod]' -print0 \
            | LC_ALL=C sort -z | xargs -0 sha256sum
    } | sha256sum | cut -c1-16
)
IMAGE="localhost/keel:test-$hash"
if ! "${PODMAN[@]}" image exists "$IMAGE"; then
    echo "container-base: building $IMAGE" >&2
    "${PODMAN[@]}" build --quiet --format docker "${LIMITS[@]}" \
        -v "$BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro" \
        --build-arg "BASE_IMAGE=$BASE_TAG" -t "$IMAGE" -f Dockerfile . >&2
    # Test images older than a day go (a run in progress elsewhere may still use newer ones).
    "${PODMAN[@]}" images --quiet --filter 'reference=localhost/keel:test-*' --filter until=24h \
        | xargs -r "${PODMAN[@]}" rmi >/dev/null 2>&1 || true
fi
echo "$IMAGE"
