package main

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestPush writes layouts as `make image` does, one platform and two, pushes
// each with -push to a registry on loopback (go-containerregistry's, in
// memory), and reads back what the registry serves.
func TestPush(t *testing.T) {
	server := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer server.Close()
	host := strings.TrimPrefix(server.URL, "http://")

	amd64 := v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64 := v1.Platform{OS: "linux", Architecture: "arm64"}
	for _, tc := range []struct {
		name      string
		platforms []v1.Platform
	}{
		{"one platform", []v1.Platform{amd64}},
		{"two platforms", []v1.Platform{amd64, arm64}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var images []v1.Image
			for _, p := range tc.platforms {
				img, err := assemble([]byte("#!"+p.Architecture), nil, p, testMeta)
				if err != nil {
					t.Fatal(err)
				}
				images = append(images, img)
			}
			dir := filepath.Join(t.TempDir(), "layout")
			want, err := writeLayout(dir, "0.1.0", images, tc.platforms)
			if err != nil {
				t.Fatal(err)
			}
			ref := host + "/voik/voik:" + strings.ReplaceAll(tc.name, " ", "-")
			if err := run([]string{"-push", "-out", dir, "-ref", ref}); err != nil {
				t.Fatal(err)
			}
			parsed, err := name.ParseReference(ref, name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			desc, err := remote.Get(parsed, remote.WithContext(context.Background()))
			if err != nil {
				t.Fatal(err)
			}
			if desc.Digest != want {
				t.Errorf("the registry serves %s, the layout holds %s", desc.Digest, want)
			}
			if got := desc.MediaType.IsIndex(); got != (len(images) > 1) {
				t.Errorf("pushed an index: %v, for %d platforms", got, len(images))
			}
			img, err := remote.Image(parsed, remote.WithPlatform(tc.platforms[len(tc.platforms)-1]))
			if err != nil {
				t.Fatal(err)
			}
			checkImage(t, img, tc.platforms[len(tc.platforms)-1], testMeta.Version)
		})
	}
}
