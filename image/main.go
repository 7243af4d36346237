// Command image builds the OCI image of voik the way ko does: no Docker, no
// Dockerfile, no base image. It cross-compiles a static voik (CGO_ENABLED=0)
// per platform, lays the binary, an /etc/passwd with the non-root user voik
// (65532), a /data directory owned by it and the CA certificates on an empty
// base with go-containerregistry, and writes an OCI image layout (a
// directory: index.json, oci-layout, blobs/). Same sources, same image: file
// times are the commit's and the layers are written in a fixed order.
//
//	go run . -src .. -out ../.build/image -repo ghcr.io/voik/voik -tag 0.1.0
//	go run . -push -out ../.build/image -ref ghcr.io/voik/voik:0.1.0
//
// -push sends the layout to a registry with the credentials of
// ~/.docker/config.json (docker login, or `go tool crane auth login`); `go
// tool crane push LAYOUT REF` does the same.
package main

import (
	"context"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	flags := flag.NewFlagSet("image", flag.ContinueOnError)
	src := flags.String("src", "..", "the voik module to build")
	out := flags.String("out", "", "the OCI image layout directory to write (replaced), or to push with -push")
	repo := flags.String("repo", "ghcr.io/voik/voik", "the image's repository, for the layout's ref name")
	tag := flags.String("tag", "", "the image's tag (the chart's appVersion), for the layout's ref name")
	version := flags.String("version", "", "voik's version (default: git describe of -src)")
	platforms := flags.String("platforms", "linux/amd64", "comma-separated platforms; more than one makes a multi-platform index")
	caCerts := flags.String("ca-certs", "auto", "CA bundle to put in the image, for TLS to NATS servers with public certificates; auto: "+systemCACerts+" if there; empty: none")
	source := flags.String("source", "https://github.com/voik/voik", "the org.opencontainers.image.source label")
	push := flags.Bool("push", false, "push the layout in -out to -ref instead of building")
	ref := flags.String("ref", "", "with -push: where to push, e.g. ghcr.io/voik/voik:0.1.0")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("-out is required")
	}
	ctx := context.Background()
	if *push {
		return pushLayout(ctx, *out, *ref)
	}
	if *tag == "" {
		return errors.New("-tag is required")
	}
	if _, err := name.NewTag(*repo + ":" + *tag); err != nil {
		return fmt.Errorf("-repo and -tag: %v", err)
	}
	meta := metadata(ctx, *src, *version, *source)

	certs, err := readCACerts(*caCerts)
	if err != nil {
		return err
	}
	var images []v1.Image
	var platformList []v1.Platform
	for _, p := range strings.Split(*platforms, ",") {
		platform, err := v1.ParsePlatform(strings.TrimSpace(p))
		if err != nil || platform.OS != "linux" {
			return fmt.Errorf("platform %q: want linux/ARCH[/VARIANT]", p)
		}
		binary, err := buildVoik(ctx, *src, *platform, meta.Version)
		if err != nil {
			return err
		}
		img, err := assemble(binary, certs, *platform, meta)
		if err != nil {
			return err
		}
		images, platformList = append(images, img), append(platformList, *platform)
	}
	digest, err := writeLayout(*out, *tag, images, platformList)
	if err != nil {
		return err
	}
	fmt.Printf("wrote %s:%s (%s, %s) to %s\n", *repo, *tag, *platforms, digest, *out)
	return nil
}

// systemCACerts is Debian's (and Alpine's, Fedora's via a link) CA bundle.
const systemCACerts = "/etc/ssl/certs/ca-certificates.crt"

// readCACerts reads the CA bundle that -ca-certs names; "auto" is the
// system's when there is one.
func readCACerts(path string) ([]byte, error) {
	switch path {
	case "":
		return nil, nil
	case "auto":
		certs, err := os.ReadFile(systemCACerts)
		if err != nil {
			fmt.Fprintf(os.Stderr, "no CA bundle at %s: the image will have none (TLS to NATS then needs VOIK_NATS_TLS_CA)\n", systemCACerts)
			return nil, nil
		}
		return certs, nil
	}
	certs, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-ca-certs: %v (-ca-certs= makes an image without them)", err)
	}
	return certs, nil
}

// writeLayout replaces dir with an OCI image layout of the images. Its
// index.json holds one entry, named by tag, so that `crane push` (and skopeo,
// oras) know what to push: the image itself for one platform, else a
// multi-platform index of them. It returns that entry's digest.
func writeLayout(dir, tag string, images []v1.Image, platforms []v1.Platform) (v1.Hash, error) {
	if err := os.RemoveAll(dir); err != nil {
		return v1.Hash{}, err
	}
	path, err := layout.Write(dir, empty.Index)
	if err != nil {
		return v1.Hash{}, err
	}
	refName := layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})
	if len(images) == 1 {
		if err := path.AppendImage(images[0], refName, layout.WithPlatform(platforms[0])); err != nil {
			return v1.Hash{}, err
		}
		return images[0].Digest()
	}
	index := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for i, img := range images {
		index = mutate.AppendManifests(index, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &platforms[i]},
		})
	}
	if err := path.AppendIndex(index, refName); err != nil {
		return v1.Hash{}, err
	}
	return index.Digest()
}

// buildVoik cross-compiles a static voik for platform and returns it.
func buildVoik(ctx context.Context, src string, platform v1.Platform, version string) ([]byte, error) {
	dir, err := os.MkdirTemp("", "voik-image-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	binary := filepath.Join(dir, "voik")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath",
		"-ldflags", "-s -w -X main.version="+version, "-o", binary, "./cmd/voik")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+platform.OS, "GOARCH="+platform.Architecture)
	if platform.Architecture == "arm" && strings.HasPrefix(platform.Variant, "v") {
		cmd.Env = append(cmd.Env, "GOARM="+strings.TrimPrefix(platform.Variant, "v"))
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	fmt.Fprintf(os.Stderr, "building voik %s for %s\n", version, platform.String())
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go build for %s: %v", platform.String(), err)
	}
	if err := checkStatic(binary); err != nil {
		return nil, err
	}
	return os.ReadFile(binary)
}

// checkStatic refuses a binary that needs a dynamic loader: the image has none.
func checkStatic(binary string) error {
	f, err := elf.Open(binary)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; the image has no loader", binary)
		}
	}
	return nil
}

// metadata reads the version, commit and commit time from git, when -src is
// a checkout. SOURCE_DATE_EPOCH wins for the time.
func metadata(ctx context.Context, src, version, source string) Metadata {
	git := func(args ...string) string {
		out, err := exec.CommandContext(ctx, "git", append([]string{"-C", src}, args...)...).Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	meta := Metadata{Version: version, Source: source, Created: time.Unix(0, 0).UTC()}
	if meta.Version == "" {
		meta.Version = git("describe", "--tags", "--always", "--dirty")
	}
	if meta.Version == "" {
		meta.Version = "dev"
	}
	meta.Revision = git("rev-parse", "HEAD")
	if epoch, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64); err == nil {
		meta.Created = time.Unix(epoch, 0).UTC()
	} else if t, err := strconv.ParseInt(git("log", "-1", "--format=%ct"), 10, 64); err == nil {
		meta.Created = time.Unix(t, 0).UTC()
	}
	return meta
}

// pushLayout pushes the one entry of the layout's index.json to ref.
func pushLayout(ctx context.Context, dir, ref string) error {
	if ref == "" {
		return errors.New("-push needs -ref, e.g. ghcr.io/voik/voik:0.1.0")
	}
	dst, err := name.ParseReference(ref)
	if err != nil {
		return err
	}
	path, err := layout.FromPath(dir)
	if err != nil {
		return fmt.Errorf("%s is not an OCI layout (run make image): %v", dir, err)
	}
	index, err := path.ImageIndex()
	if err != nil {
		return err
	}
	manifest, err := index.IndexManifest()
	if err != nil {
		return err
	}
	if len(manifest.Manifests) != 1 {
		return fmt.Errorf("%s: want one entry in index.json, found %d", dir, len(manifest.Manifests))
	}
	desc := manifest.Manifests[0]
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)}
	if desc.MediaType.IsIndex() {
		child, err := index.ImageIndex(desc.Digest)
		if err == nil {
			err = remote.WriteIndex(dst, child, opts...)
		}
		if err != nil {
			return fmt.Errorf("push to %s: %v", ref, err)
		}
	} else {
		img, err := index.Image(desc.Digest)
		if err == nil {
			err = remote.Write(dst, img, opts...)
		}
		if err != nil {
			return fmt.Errorf("push to %s: %v", ref, err)
		}
	}
	fmt.Printf("pushed %s@%s\n", dst, desc.Digest)
	return nil
}
