package charttest

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"sigs.k8s.io/yaml"
)

// TestBadValuesFailTheSchema: each testdata/bad-values/*.yaml is a mistake an
// operator could make; helm must refuse it through values.schema.json, before
// rendering anything, with the message on the file's `# want:` line.
func TestBadValuesFailTheSchema(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "bad-values", "*.yaml"))
	if err != nil || len(files) < 10 {
		t.Fatalf("want the bad-values fixtures, found %d (%v)", len(files), err)
	}
	schema := compileSchema(t)
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(data), "\n")
			want, ok := strings.CutPrefix(first, "# want: ")
			if !ok {
				t.Fatalf("the first line must be `# want: <part of the error>`, got %q", first)
			}
			abs, _ := filepath.Abs(file)
			_, err = runHelm(t, "template", release, chartDir, "--namespace", namespace, "--values", abs)
			if err == nil {
				t.Fatal("helm template accepted it")
			}
			if !strings.Contains(err.Error(), "values don't meet the specifications of the schema") {
				t.Fatalf("helm refused it, but not by the schema:\n%v", err)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("the error does not say %q:\n%v", want, err)
			}
			// The same fixture against the schema alone, merged over the
			// defaults as helm does: fails too (no template `fail` did it).
			if err := schema.Validate(mergedValues(t, abs)); err == nil {
				t.Error("the schema alone accepts it")
			}
		})
	}
}

// TestGoodValuesPassTheSchema: values.yaml and every ci file are valid.
func TestGoodValuesPassTheSchema(t *testing.T) {
	schema := compileSchema(t)
	if err := schema.Validate(mergedValues(t, "")); err == nil {
		t.Errorf("values.yaml alone passes the schema: config.subjects has no default and must be required")
	}
	for _, file := range ciValuesFiles(t) {
		if err := schema.Validate(mergedValues(t, filepath.Join(chartDir, file))); err != nil {
			t.Errorf("%s: %v", file, err)
		}
	}
}

// TestSchemaIsStrict: the schema needs nothing but itself (no $ref outside
// the file, so no network at install time), and every object in it refuses
// unknown keys except the few that are Kubernetes types passed through as
// they are (checked by the strict decoding of the rendered manifests).
func TestSchemaIsStrict(t *testing.T) {
	compileSchema(t)
	var doc any
	data, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	passThrough := map[string]bool{
		"/properties/global":                              true, // Helm's, when voik is a subchart
		"/$defs/envVar/properties/valueFrom":              true, // core/v1 EnvVarSource
		"/properties/affinity/properties/nodeAffinity":    true, // core/v1 NodeAffinity
		"/properties/affinity/properties/podAffinity":     true,
		"/properties/affinity/properties/podAntiAffinity": true,
		"/$defs/stringMap":                                true, // additionalProperties: string
		"/$defs/resourceList":                             true, // additionalProperties: quantity
	}
	var walk func(path string, node any)
	walk = func(path string, node any) {
		switch n := node.(type) {
		case map[string]any:
			if n["type"] == "object" {
				ap, has := n["additionalProperties"]
				if !passThrough[path] && (!has || ap != false) {
					t.Errorf("%s: an object that accepts unknown keys (additionalProperties %v)", path, ap)
				}
				if ref, ok := n["$ref"].(string); ok && !strings.HasPrefix(ref, "#/") {
					t.Errorf("%s: $ref %q leaves the file", path, ref)
				}
			}
			for k, v := range n {
				if k == "$ref" {
					if ref, _ := v.(string); !strings.HasPrefix(ref, "#/") {
						t.Errorf("%s: $ref %q leaves the file", path, ref)
					}
				}
				walk(path+"/"+k, v)
			}
		case []any:
			for i, v := range n {
				walk(path+"/"+strconv.Itoa(i), v)
			}
		}
	}
	walk("", doc)
}

// compileSchema compiles values.schema.json with no loader but the file
// itself: any reference outside it fails here.
func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.UseLoader(jsonschema.SchemeURLLoader{}) // nothing may be fetched
	if err := c.AddResource("file:///values.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	schema, err := c.Compile("file:///values.schema.json")
	if err != nil {
		t.Fatalf("values.schema.json does not compile on its own: %v", err)
	}
	return schema
}

// mergedValues is values.yaml with file (if any) merged over it, maps key by
// key and everything else replaced, the way helm coalesces values, in the
// JSON types the schema validator expects.
func mergedValues(t *testing.T, file string) any {
	t.Helper()
	load := func(path string) map[string]any {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		jsonData, err := yaml.YAMLToJSON(data)
		if err != nil {
			t.Fatal(err)
		}
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(jsonData))
		if err != nil {
			t.Fatal(err)
		}
		m, _ := v.(map[string]any)
		if m == nil {
			m = map[string]any{}
		}
		return m
	}
	values := load(filepath.Join(chartDir, "values.yaml"))
	if file != "" {
		mergeInto(values, load(file))
	}
	return values
}

func mergeInto(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				mergeInto(dm, sm)
				continue
			}
		}
		if v == nil {
			delete(dst, k) // helm: null removes a default
			continue
		}
		dst[k] = v
	}
}
