#!/usr/bin/env bash
# Unpacks real videos shipped in Debian packages (h264+aac mp4, msmpeg4, mpeg4, cinepak avi)
# into .cache/real_videos, for the integration tests and bench/decode.py. Needs apt (Debian).
set -euo pipefail
dest="${1:-$(cd "$(dirname "$0")/.." && pwd)/.cache/real_videos}"
if [ -f "$dest/cockatoo.mp4" ] && [ -f "$dest/vtest.avi" ]; then
  echo "real test videos already in $dest"; exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download python3-imageio opencv-doc >/dev/null 2>&1; then
  apt-get update >/dev/null
  apt-get download python3-imageio opencv-doc >/dev/null
fi
for deb in *.deb; do dpkg -x "$deb" x; done
mkdir -p "$dest"
find x -name cockatoo.mp4 -exec cp {} "$dest/" \;
for name in vtest.avi Megamind.avi tree.avi; do
  find x -path "*opencv*" -name "$name" -exec cp {} "$dest/" \; -quit
done
ls -la "$dest"
