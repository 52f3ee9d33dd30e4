#!/usr/bin/env bash
# Vendor OpenSeadragon (BSD-3-Clause) for the page of `tilex export --format iiif`:
# the prebuilt openseadragon.min.js and its licence from the npm package, nothing
# built here. The trailing sourceMappingURL comment is dropped (the map is not
# shipped, and a browser's developer tools would ask for it).
# Usage: bash tilex/viewer/static/vendor/update-openseadragon.sh [VERSION]
set -euo pipefail
version=${1:-6.1.1}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "openseadragon@$version" >/dev/null && tar xzf "openseadragon-$version.tgz")
dest=$here/openseadragon
mkdir -p "$dest"
grep -v '^//# sourceMappingURL=' "$work/package/build/openseadragon/openseadragon.min.js" >"$dest/openseadragon.min.js"
cp "$work/package/LICENSE.txt" "$dest/LICENSE.txt"
integrity=$(cd "$work" && npm view "openseadragon@$version" dist.integrity)
cat >"$dest/VENDOR.md" <<MD
# OpenSeadragon $version (vendored)

- from: the npm package \`openseadragon@$version\` (\`npm pack\`), integrity \`$integrity\`
- files: \`build/openseadragon/openseadragon.min.js\` (its last line, the
  \`sourceMappingURL\` comment, removed) and \`LICENSE.txt\` (BSD-3-Clause)
- sha256 of the files as vendored:
$(cd "$dest" && sha256sum openseadragon.min.js LICENSE.txt | sed 's/^/  - /')
- updated by: \`bash tilex/viewer/static/vendor/update-openseadragon.sh $version\`
MD
echo "vendored openseadragon $version into $dest"
