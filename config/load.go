package config

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Where settings come from, in the order they apply: the defaults in the
// tags of Config, then the YAML file, then VOIK_* variables. Every value,
// from either source, goes through the same parser, and every one that
// does not parse is reported, with its name, the value and what is
// expected, on one line with the problems Validate finds: a broken
// deployment is fixed in one round, not one restart per mistake.
//
// An empty value counts: `http_addr: ""` or VOIK_HTTP_ADDR= turns HTTP
// off, it does not bring the default back. A YAML key that names no
// setting is an error (a misspelled `subjets:` would otherwise leave voik
// capturing what the default says).

// setting is one field of Config with its tags.
type setting struct {
	field       string // Go name
	env, key    string // VOIK_ variable, YAML key
	def, text   string // default, and how -h shows it when that needs words
	description string
	kind        string // how -h names its type
	list        bool   // a comma-separated list: YAML may give a sequence
}

// settings lists Config's fields in order.
func settings() []setting {
	t := reflect.TypeOf(Config{})
	out := make([]setting, 0, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Tag.Get("env") == "" {
			continue
		}
		s := setting{
			field: f.Name, env: f.Tag.Get("env"), key: f.Tag.Get("yaml"),
			def: f.Tag.Get("env-default"), text: f.Tag.Get("default-text"),
			description: f.Tag.Get("env-description"), kind: f.Tag.Get("type"),
			list: f.Tag.Get("list") == "true",
		}
		if s.kind == "" {
			s.kind = kindOf(f.Type)
		}
		out = append(out, s)
	}
	return out
}

var durationType = reflect.TypeOf(time.Duration(0))

// kindOf names a Go type the way a person setting it thinks of it.
func kindOf(t reflect.Type) string {
	switch {
	case t == durationType:
		return "duration"
	case t == reflect.TypeOf(ByteSize(0)):
		return "size"
	case t.Kind() == reflect.Int:
		return "integer"
	case t.Kind() == reflect.Uint64:
		return "count"
	case t.Kind() == reflect.Bool:
		return "boolean"
	}
	return "text"
}

// expected says in words what a value of a kind looks like.
func expected(kind string) string {
	switch kind {
	case "duration":
		return "a duration such as 500ms, 30s, 5m, 12h or 7d"
	case "size":
		return "a size such as 512, 64KiB, 64MiB or 2GiB"
	case "integer":
		return "a whole number"
	case "count":
		return "a whole number, 0 or more"
	case "boolean":
		return "true or false"
	}
	return "text"
}

// parseValue sets field from text, or says what was expected.
func parseValue(field reflect.Value, text string) error {
	kind := kindOf(field.Type())
	raw := strings.TrimSpace(text)
	switch field.Interface().(type) {
	case time.Duration:
		d, err := ParseDuration(raw)
		if err != nil {
			return errors.New(expected(kind))
		}
		field.SetInt(int64(d))
		return nil
	case ByteSize:
		var b ByteSize
		if b.SetValue(raw) != nil {
			return errors.New(expected(kind))
		}
		field.SetInt(int64(b))
		return nil
	}
	switch field.Kind() {
	case reflect.String:
		field.SetString(text)
	case reflect.Int:
		n, err := strconv.ParseInt(raw, 10, 0)
		if err != nil {
			return errors.New(expected(kind))
		}
		field.SetInt(n)
	case reflect.Uint64:
		n, err := strconv.ParseUint(raw, 10, 64)
		if err != nil {
			return errors.New(expected(kind))
		}
		field.SetUint(n)
	case reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return errors.New(expected(kind))
		}
		field.SetBool(b)
	default:
		return fmt.Errorf("no parser for %s", field.Type()) // a new field's type: a bug the tests catch
	}
	return nil
}

// ParseDuration is time.ParseDuration with one more unit, d for days of
// 24 hours, which retention is written in ("7d", "1d12h"): whole days
// first, then anything time.ParseDuration takes, unsigned. A plain 0 is
// zero.
func ParseDuration(s string) (time.Duration, error) {
	const day = 24 * time.Hour
	var total time.Duration
	rest := s
	for {
		i := strings.IndexByte(rest, 'd')
		if i < 0 {
			break
		}
		days, err := strconv.ParseUint(rest[:i], 10, 32)
		if err != nil || i == 0 || time.Duration(days) > (math.MaxInt64-total)/day {
			return 0, fmt.Errorf("bad duration %q", s)
		}
		total += time.Duration(days) * day
		rest = rest[i+1:]
	}
	if rest == "" && rest != s {
		return total, nil
	}
	if rest != s && (strings.HasPrefix(rest, "-") || strings.HasPrefix(rest, "+")) {
		return 0, fmt.Errorf("bad duration %q", s) // 1d-1h
	}
	d, err := time.ParseDuration(rest)
	if err != nil {
		return 0, err
	}
	if total > 0 && d > math.MaxInt64-total {
		return 0, fmt.Errorf("duration %q is too long", s)
	}
	return total + d, nil
}

// read fills c from the YAML file at path (none when empty), then from
// the environment, and returns every value that did not parse.
func (c *Config) read(path string) []error {
	c.origin = map[string]string{}
	v := reflect.ValueOf(c).Elem()
	var problems []error
	if path != "" {
		values, err := readYAML(path)
		if err != nil {
			return []error{err}
		}
		for _, s := range settings() {
			text, ok := values[s.key]
			if !ok {
				continue
			}
			delete(values, s.key)
			from := fmt.Sprintf("%s (in %s)", s.key, filepath.Base(path))
			if err := parseValue(v.FieldByName(s.field), text); err != nil {
				problems = append(problems, fmt.Errorf("%s %s: want %v", from, strconv.Quote(text), err))
				continue
			}
			c.origin[s.env] = from
		}
		problems = append(problems, unknownKeys(values, path)...)
	}
	for _, s := range settings() {
		text, ok := os.LookupEnv(s.env)
		if !ok {
			continue
		}
		if err := parseValue(v.FieldByName(s.field), text); err != nil {
			problems = append(problems, fmt.Errorf("%s %s: want %v", s.env, strconv.Quote(text), err))
			continue
		}
		c.origin[s.env] = s.env // the value in force, which later checks name
	}
	return problems
}

// readYAML reads a settings file: a mapping from keys to single values
// (or, for lists, sequences of them). Keys are returned with their text;
// a null value is empty text.
func readYAML(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-config %s: %v", path, errors.Unwrap(err))
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("-config %s is not YAML: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	values := map[string]string{}
	if len(doc.Content) == 0 { // an empty file
		return values, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("-config %s: want a mapping of settings (key: value), got %s", path, nodeKind(root))
	}
	lists := map[string]bool{}
	for _, s := range settings() {
		lists[s.key] = s.list
	}
	var problems []string
	for i := 0; i+1 < len(root.Content); i += 2 {
		key, value := root.Content[i].Value, root.Content[i+1]
		if _, dup := values[key]; dup {
			problems = append(problems, fmt.Sprintf("%s is set twice (line %d)", key, root.Content[i].Line))
			continue
		}
		switch {
		case value.Kind == yaml.ScalarNode && value.Tag == "!!null":
			values[key] = ""
		case value.Kind == yaml.ScalarNode:
			values[key] = value.Value
		case value.Kind == yaml.SequenceNode && lists[key]:
			items := make([]string, 0, len(value.Content))
			for _, item := range value.Content {
				items = append(items, item.Value)
			}
			values[key] = strings.Join(items, ",")
		default:
			problems = append(problems, fmt.Sprintf("%s (line %d): want a single value, got %s", key, value.Line, nodeKind(value)))
			values[key] = ""
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("-config %s: %s", path, strings.Join(problems, "; "))
	}
	return values, nil
}

func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return "a single value"
}

// unknownKeys reports the keys left over once every setting took its own,
// with the setting each was most likely meant to be.
func unknownKeys(values map[string]string, path string) []error {
	var problems []error
	for _, s := range slices.Sorted(maps.Keys(values)) {
		msg := fmt.Sprintf("%s: %q is not a setting", filepath.Base(path), s)
		if near := nearestKey(s); near != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", near)
		}
		problems = append(problems, errors.New(msg))
	}
	return problems
}

// nearestKey is the setting key within two edits of key, or "" (also
// when key is a variable name written as a key: VOIK_SUBJECTS).
func nearestKey(key string) string {
	lower := strings.ToLower(strings.TrimPrefix(strings.ToUpper(key), "VOIK_"))
	best, bestDistance := "", 3
	for _, s := range settings() {
		if d := editDistance(lower, s.key); d < bestDistance {
			best, bestDistance = s.key, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// Name is how error messages name the setting of a variable: the YAML key
// and its file when the value came from there, else the variable.
func (c *Config) Name(env string) string {
	if from, ok := c.origin[env]; ok {
		return from
	}
	return env
}
