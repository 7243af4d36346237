package logstore

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// A subject's log lives in a directory named after the subject. NATS allows
// almost any byte in a subject, so the name is escaped:
//
//   - A-Z a-z 0-9 '-' '_' stand for themselves (case is kept);
//   - '.' stands for itself except as the first byte, so that no name is
//     "." or ".." or hidden;
//   - every other byte, including '%' and '~', is "%XX" (two upper-case
//     hex digits).
//
// The escaping is injective and reversible. A name longer than
// maxDirNameBytes (file systems stop at 255) keeps a readable prefix and
// ends in "~" and the SHA-256 of the subject; '~' never appears otherwise.
// Every log directory also holds the subject itself in subjectFileName, so
// the subject is known exactly whatever its directory is called.
const (
	maxDirNameBytes = 200
	hashedPrefix    = maxDirNameBytes - 1 - 2*sha256.Size
	subjectFileName = "subject"
)

const hexDigits = "0123456789ABCDEF"

func isPlainByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// subjectDirName returns the directory name of subject.
func subjectDirName(subject string) string {
	var b strings.Builder
	b.Grow(len(subject))
	for i := 0; i < len(subject); i++ {
		c := subject[i]
		if isPlainByte(c) || c == '.' && i > 0 {
			b.WriteByte(c)
		} else {
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		}
	}
	name := b.String()
	if len(name) <= maxDirNameBytes {
		return name
	}
	prefix := name[:hashedPrefix]
	if cut := strings.LastIndexByte(prefix[max(0, len(prefix)-2):], '%'); cut >= 0 {
		prefix = prefix[:len(prefix)-2+cut] // never split an escape
	}
	sum := sha256.Sum256([]byte(subject))
	return prefix + "~" + hex.EncodeToString(sum[:])
}

// subjectFromDirName reverses subjectDirName for names that were not
// shortened. ok is false for a shortened name or one this package did not make.
func subjectFromDirName(name string) (subject string, ok bool) {
	if name == "" || strings.IndexByte(name, '~') >= 0 || name[0] == '.' {
		return "", false
	}
	b := make([]byte, 0, len(name))
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '%':
			if i+2 >= len(name) {
				return "", false
			}
			hi, lo := unhex(name[i+1]), unhex(name[i+2])
			if hi < 0 || lo < 0 {
				return "", false
			}
			b = append(b, byte(hi<<4|lo))
			i += 2
		case isPlainByte(c) || c == '.':
			b = append(b, c)
		default:
			return "", false
		}
	}
	if subjectDirName(string(b)) != name {
		return "", false // not canonical: some other program's directory
	}
	return string(b), true
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// readSubjectFile returns the subject stored in a log directory.
func readSubjectFile(dir string, faults *faultHooks) (string, error) {
	path := filepath.Join(dir, subjectFileName)
	err := faults.fail("open", path)
	var b []byte
	if err == nil {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return "", fmt.Errorf("logstore: read subject name: %w", err)
	}
	return string(b), nil
}
