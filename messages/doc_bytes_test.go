package messages

import (
	"bytes"
	"encoding/hex"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// docListing returns the bytes of the hex listing that follows intro in
// docs/protocol.md, and the count the intro states.
func docListing(t *testing.T, doc, intro string) ([]byte, int) {
	t.Helper()
	at := strings.Index(doc, intro)
	if at < 0 {
		t.Fatalf("docs/protocol.md has no %q", intro)
	}
	n, _ := strconv.Atoi(regexp.MustCompile(`(\d+)`).FindString(doc[at:]))
	block := doc[at:]
	start := strings.Index(block, "```\n") + 4
	block = block[start : start+strings.Index(block[start:], "```")]
	var out []byte
	for _, line := range strings.Split(block, "\n") {
		code, _, _ := strings.Cut(strings.TrimSpace(line), "  ") // hex, then two spaces, then words
		b, err := hex.DecodeString(strings.ReplaceAll(code, " ", ""))
		if err != nil {
			t.Fatalf("listing line %q: %v", line, err)
		}
		out = append(out, b...)
	}
	return out, n
}

// TestProtocolDocsByteListingsAreWhatVoikWrites keeps section 10 of
// docs/protocol.md, a request and its reply byte by byte, true to the code.
func TestProtocolDocsByteListingsAreWhatVoikWrites(t *testing.T) {
	raw, err := os.ReadFile("../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	request, size := docListing(t, doc, "this 23-byte body")
	if len(request) != 23 || size != 23 {
		t.Fatalf("request listing: %d bytes, says %d", len(request), size)
	}
	got, decodeErr := DecodeFetchRequest(request)
	if decodeErr != nil || got.Offset == nil || *got.Offset != 2 || got.MaxMessages != 1 {
		t.Fatalf("the documented request decodes as %+v, %v", got, decodeErr)
	}
	reply, size := docListing(t, doc, "voik answers with these")
	var b FetchReplyBuilder
	b.Add(2, 1795657050662165594, map[string][]string{"Source": {"web"}}, []byte("order"))
	want := b.Finish("orders.eu", 3, 0, 4)
	if !bytes.Equal(reply, want) || size != len(want) {
		t.Fatalf("docs show %d bytes (and say %d):\n% x\nvoik writes %d:\n% x", len(reply), size, reply, len(want), want)
	}
}
