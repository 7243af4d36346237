package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's layout. The chart, the README and the tests depend on these.
const (
	binaryPath = "/usr/local/bin/voik"
	dataDir    = "/data"
	httpPort   = "8333/tcp"
	uid        = 65532 // the non-root user "voik"; the chart's runAsUser and fsGroup
	userName   = "voik"
)

// Metadata is what the labels and annotations say about the image.
type Metadata struct {
	Version  string    // voik's version (git describe)
	Revision string    // the commit
	Created  time.Time // the commit's time: the same sources give the same image
	Source   string    // the repository URL
}

// file is one entry of a layer.
type file struct {
	path     string // absolute
	mode     int64  // permission bits
	dir      bool
	uid, gid int
	content  []byte
}

// assemble builds the image of one platform: a layer of base files (the
// user, the data dir, CA certificates when given) shared by every platform
// and version, and a layer with the static binary, on an empty base.
func assemble(binary, caCerts []byte, platform v1.Platform, meta Metadata) (v1.Image, error) {
	base := []file{
		{path: "/etc", mode: 0o755, dir: true},
		{path: "/etc/passwd", mode: 0o644, content: []byte(fmt.Sprintf(
			"root:x:0:0:root:/root:/sbin/nologin\n%s:x:%d:%d:voik:%s:/sbin/nologin\n", userName, uid, uid, dataDir))},
		{path: "/etc/group", mode: 0o644, content: []byte(fmt.Sprintf("root:x:0:\n%s:x:%d:\n", userName, uid))},
		// Go's resolver reads it: files first, as glibc systems do.
		{path: "/etc/nsswitch.conf", mode: 0o644, content: []byte("hosts: files dns\n")},
		// Owned by voik, like the directory voik itself would make (0700).
		// Kubernetes mounts the volume here; fsGroup makes it writable.
		{path: dataDir, mode: 0o700, dir: true, uid: uid, gid: uid},
	}
	if len(caCerts) > 0 {
		base = append(base,
			file{path: "/etc/ssl", mode: 0o755, dir: true},
			file{path: "/etc/ssl/certs", mode: 0o755, dir: true},
			file{path: "/etc/ssl/certs/ca-certificates.crt", mode: 0o644, content: caCerts})
	}
	app := []file{
		{path: "/usr", mode: 0o755, dir: true},
		{path: "/usr/local", mode: 0o755, dir: true},
		{path: "/usr/local/bin", mode: 0o755, dir: true},
		{path: binaryPath, mode: 0o755, content: binary},
	}

	var layers []mutate.Addendum
	for _, l := range []struct {
		files []file
		doc   string
	}{
		{base, "voik image: /etc/passwd with user voik (65532), /data owned by it, CA certificates"},
		{app, "voik image: " + binaryPath + " " + meta.Version},
	} {
		layer, err := layerOf(l.files, meta.Created)
		if err != nil {
			return nil, err
		}
		layers = append(layers, mutate.Addendum{
			Layer:     layer,
			MediaType: types.OCILayer,
			History:   v1.History{Created: v1.Time{Time: meta.Created}, CreatedBy: l.doc, Comment: "assembled by image/ (go-containerregistry)"},
		})
	}

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.Append(img, layers...)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS, cfg.Variant = platform.Architecture, platform.OS, platform.Variant
	cfg.Created = v1.Time{Time: meta.Created}
	cfg.Author = "voik"
	cfg.Config = v1.Config{
		User:       fmt.Sprintf("%d:%d", uid, uid),
		Entrypoint: []string{binaryPath},
		Cmd:        []string{"serve"},
		// PATH makes `kubectl exec POD -- voik fetch ...` work.
		Env:          []string{"PATH=/usr/local/bin", "VOIK_DATA_DIR=" + dataDir},
		WorkingDir:   "/",
		ExposedPorts: map[string]struct{}{httpPort: {}},
		Volumes:      map[string]struct{}{dataDir: {}},
		Labels:       labels(meta),
		StopSignal:   "SIGTERM",
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, err
	}
	return mutate.Annotations(img, labels(meta)).(v1.Image), nil
}

// labels are the OCI annotations of the image, set both as config labels
// (docker inspect) and as manifest annotations (registries).
func labels(meta Metadata) map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":       "voik",
		"org.opencontainers.image.description": "voik gives NATS subjects a memory: a per-subject commit log served over NATS request/reply",
		"org.opencontainers.image.source":      meta.Source,
		"org.opencontainers.image.url":         meta.Source,
		"org.opencontainers.image.version":     meta.Version,
		"org.opencontainers.image.created":     meta.Created.UTC().Format(time.RFC3339),
	}
	if meta.Revision != "" {
		l["org.opencontainers.image.revision"] = meta.Revision
	}
	return l
}

// layerOf writes files as a tar in a fixed order with fixed times, owners
// and modes, so that the same files always give the same digest.
func layerOf(files []file, modTime time.Time) (v1.Layer, error) {
	sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		if !path.IsAbs(f.path) || path.Clean(f.path) != f.path {
			return nil, fmt.Errorf("layer path %q is not clean and absolute", f.path)
		}
		h := &tar.Header{
			Name:    strings.TrimPrefix(f.path, "/"),
			Mode:    f.mode,
			Uid:     f.uid,
			Gid:     f.gid,
			Uname:   owner(f.uid),
			Gname:   owner(f.gid),
			ModTime: modTime,
			Format:  tar.FormatPAX,
		}
		if f.dir {
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.content))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.content); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

func owner(id int) string {
	switch id {
	case 0:
		return "root"
	case uid:
		return userName
	}
	return strconv.Itoa(id)
}
