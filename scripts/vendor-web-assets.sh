#!/usr/bin/env bash
# Refresh the third-party files the web dashboard serves (API docs pages) from the npm
# registry, at pinned versions, into package data: the server never loads anything from a
# CDN, so the dashboard and /api/v1/docs work on an offline cluster.  Run by hand when
# upgrading; the files are committed.  Needs npm.
# Usage: scripts/vendor-web-assets.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SWAGGER_UI=5.35.0   # swagger-ui-dist: the Swagger UI project's own prebuilt distribution
REDOC=2.5.4         # redoc: its standalone bundle (3.x needs an ES module page; FastAPI's page loads 2.x)
JS_YAML=4.1.0       # js-yaml: its ES module build, for service documents on the Services page
dest=src/virtuai/web/static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "swagger-ui-dist@$SWAGGER_UI" "redoc@$REDOC" "js-yaml@$JS_YAML" >/dev/null)
mkdir -p "$work/s" "$work/r" "$work/y" "$dest/swagger-ui" "$dest/redoc" "$dest/js-yaml"
tar xzf "$work/swagger-ui-dist-$SWAGGER_UI.tgz" -C "$work/s"
tar xzf "$work/redoc-$REDOC.tgz" -C "$work/r"
tar xzf "$work/js-yaml-$JS_YAML.tgz" -C "$work/y"
for f in swagger-ui-bundle.js swagger-ui.css LICENSE NOTICE favicon-32x32.png; do
  cp "$work/s/package/$f" "$dest/swagger-ui/$f"
done
cp "$work/r/package/bundles/redoc.standalone.js" "$dest/redoc/redoc.standalone.js"
# ReDoc's side menu shows Redocly's logo from their CDN: on an offline cluster the page's
# CSP blocks it and the console reports the violation.  An empty image instead (the
# attribution's text stays).
sed -i "s#\"https://cdn.redoc.ly/redoc/logo-mini.svg\"#\"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E\"#" \
  "$dest/redoc/redoc.standalone.js"
if grep -q 'https://cdn\.' "$dest/redoc/redoc.standalone.js"; then
  echo "redoc $REDOC loads something else from a CDN: see scripts/vendor-web-assets.sh" >&2; exit 1
fi
cp "$work/r/package/LICENSE" "$dest/redoc/LICENSE"
cp "$work/y/package/dist/js-yaml.mjs" "$work/y/package/LICENSE" "$dest/js-yaml/"
{
  echo "swagger-ui-dist $SWAGGER_UI (npm)"
  echo "redoc $REDOC (npm)"
  echo "js-yaml $JS_YAML (npm; dist/js-yaml.mjs, loaded only when a service spec is applied)"
  (cd "$dest" && sha256sum swagger-ui/* redoc/* js-yaml/*)
} > "$dest/VERSIONS"
echo "vendored into $dest:"; cat "$dest/VERSIONS"
