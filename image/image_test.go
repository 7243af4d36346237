package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

var testMeta = Metadata{Version: "v9.9.9", Revision: "0123abcd", Created: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC), Source: "https://github.com/voik/voik"}

// TestAssemble builds an image around a stand-in binary and checks its
// config and files.
func TestAssemble(t *testing.T) {
	platform := v1.Platform{OS: "linux", Architecture: "arm64"}
	img, err := assemble([]byte("#!binary"), []byte("CERTS"), platform, testMeta)
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, img, platform, testMeta.Version)
	files := extract(t, img)
	if got := string(files[binaryPath].content); got != "#!binary" {
		t.Errorf("%s holds %q", binaryPath, got)
	}
	if got := string(files["/etc/ssl/certs/ca-certificates.crt"].content); got != "CERTS" {
		t.Errorf("CA bundle %q", got)
	}
	cfg, _ := img.ConfigFile()
	if cfg.Config.Labels["org.opencontainers.image.revision"] != "0123abcd" ||
		cfg.Config.Labels["org.opencontainers.image.created"] != "2026-11-25T10:00:00Z" {
		t.Errorf("labels %v", cfg.Config.Labels)
	}

	// Reproducible: the same inputs, the same digest; another binary
	// changes only the binary's layer.
	again, err := assemble([]byte("#!binary"), []byte("CERTS"), platform, testMeta)
	if err != nil {
		t.Fatal(err)
	}
	if d1, d2 := digest(t, img), digest(t, again); d1 != d2 {
		t.Errorf("two builds of the same inputs: %s and %s", d1, d2)
	}
	other, err := assemble([]byte("#!other"), []byte("CERTS"), platform, testMeta)
	if err != nil {
		t.Fatal(err)
	}
	l1, _ := img.Layers()
	l2, _ := other.Layers()
	if digest(t, l1[0]) != digest(t, l2[0]) || digest(t, l1[1]) == digest(t, l2[1]) {
		t.Error("the base layer should be shared between builds and the binary's layer not")
	}

	without, err := assemble([]byte("#!binary"), nil, platform, testMeta)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := extract(t, without)["/etc/ssl/certs/ca-certificates.crt"]; ok {
		t.Error("a CA bundle although none was given")
	}
}

// TestLayout checks the image `make image` wrote (VOIK_IMAGE_LAYOUT, set by
// `make image-test`): the layout, each platform's config and files, and that
// the binary is static and runs.
func TestLayout(t *testing.T) {
	dir := os.Getenv("VOIK_IMAGE_LAYOUT")
	if dir == "" {
		t.Skip("VOIK_IMAGE_LAYOUT is not set: `make image-test` builds the image and sets it")
	}
	path, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	index, err := path.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(manifest.Manifests) != 1 {
		t.Fatalf("index.json has %d entries, want 1 (what crane push pushes)", len(manifest.Manifests))
	}
	top := manifest.Manifests[0]
	tag := top.Annotations["org.opencontainers.image.ref.name"]
	if tag == "" {
		t.Error("index.json's entry has no org.opencontainers.image.ref.name")
	}
	if want := chartAppVersion(t); tag != want {
		t.Errorf("the image is tagged %q, the chart's appVersion (its default image tag) is %q", tag, want)
	}

	type platformImage struct {
		platform v1.Platform
		image    v1.Image
	}
	var images []platformImage
	if top.MediaType.IsIndex() {
		child, err := index.ImageIndex(top.Digest)
		if err != nil {
			t.Fatal(err)
		}
		im, err := child.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range im.Manifests {
			img, err := child.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			images = append(images, platformImage{*d.Platform, img})
		}
	} else {
		img, err := index.Image(top.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if top.Platform == nil {
			t.Fatal("index.json's entry has no platform")
		}
		images = append(images, platformImage{*top.Platform, img})
	}

	for _, pi := range images {
		t.Run(pi.platform.String(), func(t *testing.T) {
			cfg, err := pi.image.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			version := cfg.Config.Labels["org.opencontainers.image.version"]
			checkImage(t, pi.image, pi.platform, version)
			files := extract(t, pi.image)
			binary := filepath.Join(t.TempDir(), "voik")
			if err := os.WriteFile(binary, files[binaryPath].content, 0o755); err != nil {
				t.Fatal(err)
			}
			checkELF(t, binary, pi.platform)
			if pi.platform.OS != runtime.GOOS || pi.platform.Architecture != runtime.GOARCH {
				return
			}
			// The entrypoint runs here too: it is a static binary.
			out, err := exec.Command(binary, "version").CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "voik "+version {
				t.Errorf("voik version: %q (%v), want %q", out, err, "voik "+version)
			}
			if out, err := exec.Command(binary, "-h").CombinedOutput(); err != nil || !strings.Contains(string(out), "VOIK_DATA_DIR") {
				t.Errorf("voik -h: %v\n%s", err, out)
			}
		})
	}
}

// checkImage checks what the chart and the README rely on.
func checkImage(t *testing.T, img v1.Image, platform v1.Platform, version string) {
	t.Helper()
	mt, err := img.MediaType()
	if err != nil || mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %q (%v), want OCI", mt, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Config
	if cfg.OS != platform.OS || cfg.Architecture != platform.Architecture {
		t.Errorf("config platform %s/%s, want %s", cfg.OS, cfg.Architecture, platform.String())
	}
	if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/voik"}) || !slices.Equal(c.Cmd, []string{"serve"}) {
		t.Errorf("entrypoint %q cmd %q, want [/usr/local/bin/voik] [serve]", c.Entrypoint, c.Cmd)
	}
	if c.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532 (numeric, so runAsNonRoot can check it)", c.User)
	}
	if _, ok := c.ExposedPorts["8333/tcp"]; !ok || len(c.ExposedPorts) != 1 {
		t.Errorf("exposed ports %v, want 8333/tcp", c.ExposedPorts)
	}
	if _, ok := c.Volumes["/data"]; !ok || len(c.Volumes) != 1 {
		t.Errorf("volumes %v, want /data", c.Volumes)
	}
	if !slices.Contains(c.Env, "PATH=/usr/local/bin") || !slices.Contains(c.Env, "VOIK_DATA_DIR=/data") {
		t.Errorf("env %q", c.Env)
	}
	for _, key := range []string{"title", "description", "source", "version", "created"} {
		if c.Labels["org.opencontainers.image."+key] == "" {
			t.Errorf("no label org.opencontainers.image.%s", key)
		}
	}
	if version == "" || c.Labels["org.opencontainers.image.version"] != version {
		t.Errorf("version label %q, want %q", c.Labels["org.opencontainers.image.version"], version)
	}
	manifest, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if manifest.Annotations["org.opencontainers.image.source"] == "" {
		t.Error("the manifest has no OCI annotations")
	}
	for _, l := range manifest.Layers {
		if l.MediaType != types.OCILayer {
			t.Errorf("layer media type %q", l.MediaType)
		}
	}

	files := extract(t, img)
	bin, ok := files[binaryPath]
	if !ok || bin.mode != 0o755 || bin.uid != 0 || len(bin.content) == 0 {
		t.Errorf("%s: %+v, want a root-owned 0755 file", binaryPath, bin.header())
	}
	data, ok := files["/data"]
	if !ok || !data.dir || data.uid != 65532 || data.gid != 65532 || data.mode != 0o700 {
		t.Errorf("/data: %+v, want a 0700 directory of 65532:65532", data.header())
	}
	passwd := string(files["/etc/passwd"].content)
	if !strings.Contains(passwd, "\nvoik:x:65532:65532:") {
		t.Errorf("/etc/passwd has no user voik 65532:\n%s", passwd)
	}
	if !strings.Contains(string(files["/etc/group"].content), "voik:x:65532:") {
		t.Error("/etc/group has no group voik 65532")
	}
	for p, f := range files {
		if f.uid != 0 && p != "/data" {
			t.Errorf("%s is owned by %d; only /data belongs to voik", p, f.uid)
		}
		if !f.dir && f.mode&0o022 != 0 {
			t.Errorf("%s is writable by group or others (%o)", p, f.mode)
		}
	}
}

type entry struct {
	dir      bool
	mode     int64
	uid, gid int
	content  []byte
}

func (e entry) header() string {
	return fmt.Sprintf("dir=%v mode=%o owner=%d:%d", e.dir, e.mode, e.uid, e.gid)
}

// extract reads the image's flattened file system.
func extract(t *testing.T, img v1.Image) map[string]entry {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	files := map[string]entry{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var content bytes.Buffer
		if _, err := io.Copy(&content, tr); err != nil {
			t.Fatal(err)
		}
		files["/"+strings.TrimSuffix(h.Name, "/")] = entry{
			dir: h.Typeflag == tar.TypeDir, mode: h.Mode & 0o7777, uid: h.Uid, gid: h.Gid, content: content.Bytes(),
		}
	}
	return files
}

func checkELF(t *testing.T, binary string, platform v1.Platform) {
	t.Helper()
	f, err := elf.Open(binary)
	if err != nil {
		t.Fatalf("%s is not an ELF binary: %v", binaryPath, err)
	}
	defer f.Close()
	machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "arm": elf.EM_ARM}[platform.Architecture]
	if f.Machine != machine {
		t.Errorf("binary for %v, want %s", f.Machine, platform.Architecture)
	}
	if err := checkStatic(binary); err != nil {
		t.Error(err)
	}
}

func digest(t *testing.T, d interface{ Digest() (v1.Hash, error) }) v1.Hash {
	t.Helper()
	h, err := d.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// chartAppVersion is the appVersion of charts/voik: the chart's default tag.
func chartAppVersion(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "charts", "voik", "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "appVersion:"); ok {
			return strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	t.Fatal("Chart.yaml has no appVersion")
	return ""
}
