#!/bin/sh
# Refresh the vendored caniemail data (https://www.caniemail.com, MIT) from the npm package
# `caniemail`: data/caniemail.json and its LICENSE, plus the version they came from.
# Usage: qa/data/refresh_caniemail.sh [VERSION]   (default: the latest published version)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
version=${1:-latest}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# npm pack checks the tarball against the registry's integrity hash.
npm pack "caniemail@$version" --pack-destination "$tmp" --silent >/dev/null
tar -xzf "$tmp"/caniemail-*.tgz -C "$tmp"

python3 - "$tmp/package" <<'PY'
import json, sys
from pathlib import Path

package = Path(sys.argv[1])
data = json.loads((package / "data" / "caniemail.json").read_text(encoding="utf-8"))
features = data.get("data")
if not isinstance(features, list) or len(features) < 100:
    sys.exit(f"unexpected caniemail.json: {len(features or [])} features")
for feature in features:
    if not {"slug", "title", "category", "stats", "url"} <= set(feature):
        sys.exit(f"unexpected feature entry: {sorted(feature)}")
meta = json.loads((package / "package.json").read_text(encoding="utf-8"))
if meta.get("license") != "MIT":
    sys.exit(f"licence changed to {meta.get('license')!r}: review before vendoring")
print(f"caniemail {meta['version']}: {len(features)} features, updated {data.get('last_update_date')}")
PY

cp "$tmp/package/data/caniemail.json" "$here/caniemail.json"
cp "$tmp/package/LICENSE" "$here/LICENSE-caniemail"
python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' \
    "$tmp/package/package.json" > "$here/caniemail.version"
echo "wrote $here/caniemail.json, LICENSE-caniemail and caniemail.version"
