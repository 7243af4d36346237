package messages

import (
	"fmt"
	"strings"
)

// ValidSubject reports whether s is a concrete NATS subject: dot-separated
// non-empty tokens, no white space, and no wildcard token.
func ValidSubject(s string) bool {
	return validTokens(s, false)
}

// ValidFilter reports whether s is a NATS subject filter: like a subject,
// but a token may be "*" and the last token may be ">".
func ValidFilter(s string) bool {
	return validTokens(s, true)
}

// validTokens checks s in one pass without allocating: capture asks it of
// every message.
func validTokens(s string, wildcards bool) bool {
	if s == "" {
		return false
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) {
			switch s[i] {
			case ' ', '\t', '\r', '\n', 0:
				return false
			case '.':
			default:
				continue
			}
		}
		switch token := s[start:i]; token {
		case "":
			return false
		case "*":
			if !wildcards {
				return false
			}
		case ">":
			if !wildcards || i != len(s) {
				return false
			}
		}
		start = i + 1
	}
	return true
}

// Matches reports whether the concrete subject matches filter.
func Matches(filter, subject string) bool {
	for {
		ft, frest, fmore := strings.Cut(filter, ".")
		st, srest, smore := strings.Cut(subject, ".")
		switch {
		case ft == ">":
			return true
		case ft != "*" && ft != st:
			return false
		}
		if !fmore || !smore {
			return fmore == smore
		}
		filter, subject = frest, srest
	}
}

// Covers reports whether every subject that matches inner also matches
// outer (both filters).
func Covers(outer, inner string) bool {
	for {
		ot, orest, omore := strings.Cut(outer, ".")
		it, irest, imore := strings.Cut(inner, ".")
		switch {
		case ot == ">":
			return true
		case it == ">":
			return false
		case ot != "*" && ot != it:
			return false
		}
		if !omore || !imore {
			return omore == imore
		}
		outer, inner = orest, irest
	}
}

// Overlap reports whether some subject matches both filters.
func Overlap(a, b string) bool {
	for {
		at, arest, amore := strings.Cut(a, ".")
		bt, brest, bmore := strings.Cut(b, ".")
		switch {
		case at == ">" || bt == ">":
			return true
		case at != "*" && bt != "*" && at != bt:
			return false
		}
		if !amore || !bmore {
			return amore == bmore
		}
		a, b = arest, brest
	}
}

// The one rule of what voik never stores (the protocol's section 2), by
// subject: anything under the API prefix, anything starting with "_INBOX."
// (replies) or "$" (the system's and JetStream's subjects, and voik's own
// inboxes). Messages carrying HeaderOffset (replays) or HeaderReply
// (voik's replies) are not stored either, whatever their subject.

// inboxPrefix starts the reply subjects of NATS clients.
const inboxPrefix = "_INBOX."

// NeverStored says whether a message on subject is never stored by a
// voik whose API prefix is prefix.
func NeverStored(subject, prefix string) bool {
	return IsInbox(subject) || strings.HasPrefix(subject, "$") || UnderPrefix(subject, prefix)
}

// IsInbox says whether subject is under _INBOX., where NATS clients take
// their replies.
func IsInbox(subject string) bool { return strings.HasPrefix(subject, inboxPrefix) }

// UnderPrefix says whether subject is prefix itself or a subject below it.
func UnderPrefix(subject, prefix string) bool {
	return subject == prefix || len(subject) > len(prefix) && strings.HasPrefix(subject, prefix) && subject[len(prefix)] == '.'
}

// CheckPrefix says what is wrong with prefix as an API prefix, or nil: it
// must be a subject without wildcards, and not one that is never stored
// for another reason (_INBOX., $), which would make its requests look
// like replies or system traffic.
func CheckPrefix(prefix string) error {
	switch {
	case !ValidSubject(prefix):
		return fmt.Errorf("%q is not a valid subject without wildcards", prefix)
	case IsInbox(prefix) || strings.HasPrefix(prefix, "$"):
		return fmt.Errorf("%q may not start with _INBOX. or $", prefix)
	}
	return nil
}

// ParseFilters parses a comma-separated list of capture filters: each
// must be valid; duplicates and filters covered by another are dropped.
// Filters may still overlap ("orders.*" and "*.eu"): a message both match
// is stored once.
func ParseFilters(list string) ([]string, error) {
	var filters []string
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if !ValidFilter(f) {
			return nil, fmt.Errorf("%q is not a valid subject filter", f)
		}
		filters = append(filters, f)
	}
	var kept []string
	for i, f := range filters {
		covered := false
		for j, g := range filters {
			if i != j && Covers(g, f) && (!Covers(f, g) || j < i) {
				covered = true
				break
			}
		}
		if !covered {
			kept = append(kept, f)
		}
	}
	return kept, nil
}
