package pg

// SASLprep (RFC 4013) of SCRAM passwords, following PostgreSQL's
// pg_saslprep: an ASCII password is used as is; otherwise the password is
// mapped and NFKC-normalized, and if the input is not valid UTF-8 or the
// result contains a prohibited character, the raw bytes are used instead
// (which is what the server did when it stored the password).
// Code points unassigned in Unicode 3.2 (RFC 3454 table A.1, in
// unassigned32.go) count as prohibited, as in PostgreSQL, so a password
// with a character assigned later (an emoji, say) is used raw by both.
// NFKC itself uses the newer Unicode tables of golang.org/x/text.

//go:generate python3 gen_unassigned.py

import (
	"sort"
	"unicode/utf8"

	"golang.org/x/text/unicode/bidi"
	"golang.org/x/text/unicode/norm"
)

type runeRange struct{ lo, hi rune }

func inRanges(r rune, rs []runeRange) bool {
	for _, x := range rs {
		if r >= x.lo && r <= x.hi {
			return true
		}
	}
	return false
}

// RFC 3454 C.1.2: non-ASCII space characters, mapped to U+0020.
var nonASCIISpace = []runeRange{
	{0x00A0, 0x00A0}, {0x1680, 0x1680}, {0x2000, 0x200B}, {0x202F, 0x202F},
	{0x205F, 0x205F}, {0x3000, 0x3000},
}

// RFC 3454 B.1: commonly mapped to nothing.
var mappedToNothing = []runeRange{
	{0x00AD, 0x00AD}, {0x034F, 0x034F}, {0x1806, 0x1806}, {0x180B, 0x180D},
	{0x200B, 0x200D}, {0x2060, 0x2060}, {0xFE00, 0xFE0F}, {0xFEFF, 0xFEFF},
}

// RFC 3454 C.1.2, C.2.1, C.2.2, C.3, C.4, C.5, C.6, C.7, C.8, C.9.
var prohibited = []runeRange{
	{0x0000, 0x001F}, {0x007F, 0x009F}, {0x00A0, 0x00A0}, {0x0340, 0x0341},
	{0x06DD, 0x06DD}, {0x070F, 0x070F}, {0x1680, 0x1680}, {0x180E, 0x180E},
	{0x2000, 0x200F}, {0x2028, 0x202F}, {0x205F, 0x2063}, {0x206A, 0x206F},
	{0x2FF0, 0x2FFB}, {0x3000, 0x3000}, {0xD800, 0xF8FF}, {0xFDD0, 0xFDEF},
	{0xFEFF, 0xFEFF}, {0xFFF9, 0xFFFF}, {0x1D173, 0x1D17A}, {0xE0001, 0xE0001},
	{0xE0020, 0xE007F}, {0xF0000, 0x10FFFF},
}

func isNonCharacter(r rune) bool { return r&0xFFFE == 0xFFFE } // U+xFFFE, U+xFFFF

// saslPrep returns the password to feed to SCRAM. The result is a new slice
// that the caller zeroes.
func saslPrep(pw []byte) []byte {
	raw := func() []byte { return append([]byte(nil), pw...) }
	ascii := true
	for _, b := range pw {
		if b >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii || !utf8.Valid(pw) {
		return raw()
	}
	mapped := make([]byte, 0, len(pw))
	for i := 0; i < len(pw); {
		r, n := utf8.DecodeRune(pw[i:])
		i += n
		switch {
		case inRanges(r, nonASCIISpace):
			mapped = append(mapped, ' ')
		case inRanges(r, mappedToNothing):
		default:
			mapped = utf8.AppendRune(mapped, r)
		}
	}
	out := norm.NFKC.Append(nil, mapped...) // a new slice: mapped is zeroed
	clear(mapped)
	if len(out) == 0 || !saslPrepAllowed(out) {
		clear(out)
		return raw()
	}
	return out
}

// saslPrepAllowed checks the prohibited-output and bidirectional rules.
func saslPrepAllowed(s []byte) bool {
	var hasRandAL, hasL bool
	var first, last rune
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRune(s[i:])
		if i == 0 {
			first = r
		}
		i += n
		last = r
		if inRanges(r, prohibited) || isNonCharacter(r) || unassignedIn32(r) {
			return false
		}
		p, _ := bidi.LookupRune(r)
		switch p.Class() {
		case bidi.R, bidi.AL:
			hasRandAL = true
		case bidi.L:
			hasL = true
		}
	}
	if hasRandAL {
		if hasL || !isRandAL(first) || !isRandAL(last) {
			return false
		}
	}
	return true
}

func isRandAL(r rune) bool {
	p, _ := bidi.LookupRune(r)
	return p.Class() == bidi.R || p.Class() == bidi.AL
}

// unassignedIn32 reports whether r was unassigned in Unicode 3.2.
func unassignedIn32(r rune) bool {
	i := sort.Search(len(unassigned32), func(i int) bool { return unassigned32[i].hi >= r })
	return i < len(unassigned32) && unassigned32[i].lo <= r
}
