package config

import (
	"fmt"
	"io"
	"reflect"
	"strings"
	"text/tabwriter"
)

// Usage writes every setting with its variable, type, default and
// meaning, for voik -h.
func Usage(w io.Writer) {
	fmt.Fprintln(w, "Settings: an environment variable, or its YAML key (lower case, without VOIK_) in the file of -config FILE; the variable wins.")
	fmt.Fprintln(w, "Durations: 500ms, 30s, 5m, 12h, 7d. Sizes: 512, 64KiB, 64MiB, 2GiB (KB, MB, GB: powers of ten). Empty values count.")
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, s := range settings() {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", s.env, s.kind, "default "+s.shownDefault(false))
		fmt.Fprintf(tw, "  \t%s\t\n", s.description)
	}
	tw.Flush()
}

// shownDefault is the default as -h (plain) or the README (markdown)
// shows it.
func (s setting) shownDefault(markdown bool) string {
	switch {
	case s.text != "":
		if markdown {
			first, rest, _ := strings.Cut(s.text, " ")
			return "`" + first + "` " + rest
		}
		return s.text
	case s.def == "":
		return "empty"
	case markdown:
		return "`" + s.def + "`"
	}
	return s.def
}

// MarkdownTable renders every setting as a Markdown table: variable,
// type, default, meaning. The settings table of docs/settings.md is this, kept in
// step by a test (make docs rewrites it).
func MarkdownTable() string {
	var b strings.Builder
	b.WriteString("| variable | type | default | meaning |\n| --- | --- | --- | --- |\n")
	for _, s := range settings() {
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", s.env, s.kind, s.shownDefault(true), strings.ReplaceAll(s.description, "|", "\\|"))
	}
	return b.String()
}

// Defaults is every setting at its default, read from the env-default
// tags of Config, the one place defaults are written: Load starts from
// it, and so do tests.
func Defaults() *Config {
	var c Config
	v := reflect.ValueOf(&c).Elem()
	for _, s := range settings() {
		if s.def == "" {
			continue
		}
		if err := parseValue(v.FieldByName(s.field), s.def); err != nil {
			// The tags are this package's: a bad one is a bug the tests catch.
			panic(fmt.Sprintf("config: default of %s: %v", s.field, err))
		}
	}
	return &c
}
