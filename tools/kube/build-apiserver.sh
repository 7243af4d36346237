#!/bin/sh
# build-apiserver.sh VERSION OUT: builds kube-apiserver VERSION (v1.34.4)
# from the Go module proxy alone, for the chart tests (charts/test), which
# create every rendered object through a real API server.
#
# k8s.io/kubernetes cannot be built as a dependency or with `go install`:
# its go.mod requires its staging modules (k8s.io/api, k8s.io/apiserver,
# ...) at v0.0.0 and replaces them with ./staging/src/k8s.io/..., which its
# module zip does not contain (each is a module of its own). So the source
# is copied out of the module cache, the replace block is dropped, and each
# staging module is required at its published version, v0.X.Y for v1.X.Y.
# The version variables are set as hack/lib/version.sh sets them, so that
# the server reports VERSION (and its emulation version follows from it).
set -eu

version=${1:?usage: build-apiserver.sh VERSION OUT}
out=${2:?usage: build-apiserver.sh VERSION OUT}
GO=${GO:-go}

case $version in
v1.*.*) ;;
*) echo "build-apiserver.sh: version $version: want v1.X.Y" >&2; exit 2 ;;
esac
rest=${version#v1.}
minor=${rest%%.*}
staging=v0.$rest
case $out in
/*) ;;
*) out=$(pwd)/$out ;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/kube-apiserver-src.XXXXXX")
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT INT TERM

# Outside any module: `go mod download` of a module path and version.
dir=$(cd "$work" && "$GO" mod download -json "k8s.io/kubernetes@$version" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
if [ -z "$dir" ] || [ ! -f "$dir/go.mod" ]; then
	echo "build-apiserver.sh: go mod download k8s.io/kubernetes@$version gave no source" >&2
	exit 1
fi
cp -R "$dir" "$work/kubernetes"
chmod -R u+w "$work/kubernetes" # the module cache is read-only
cd "$work/kubernetes"
rm -f go.work go.work.sum

# Every module the replace block sends to ./staging: drop the replace, and
# where go.mod requires it at v0.0.0, require the published version.
edits=
for m in $(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' go.mod); do
	edits="$edits -dropreplace=$m"
	if grep -Eq "^[[:space:]]*$(echo "$m" | sed 's/\./\\./g')[[:space:]]+v0\.0\.0([[:space:]]|$)" go.mod; then
		edits="$edits -require=$m@$staging"
	fi
done
if [ -z "$edits" ]; then
	echo "build-apiserver.sh: no staging replace block in k8s.io/kubernetes@$version's go.mod" >&2
	exit 1
fi
# shellcheck disable=SC2086 # one argument per edit
"$GO" mod edit $edits

ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags="$ldflags -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
	ldflags="$ldflags -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
mkdir -p "$(dirname "$out")"
echo "building kube-apiserver $version (about five minutes and 2 GB of build cache cold, once)"
CGO_ENABLED=0 GOFLAGS=-mod=mod "$GO" build -trimpath -ldflags "$ldflags" -o "$out.tmp" ./cmd/kube-apiserver
mv "$out.tmp" "$out"
