package messages

import "strings"

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
