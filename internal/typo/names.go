// Package typo compares the short names users type (connector ids,
// credential names), to suggest the one meant by a typo.
package typo

import "strings"

// EditDistance is the Levenshtein distance of two short ASCII names.
func EditDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Closest returns the candidate name meant by typed: one that differs only
// in case, '-' or '_', that typed names by a known alias, or that is at
// most two edits away (one for names of four letters or fewer); "" when
// none is.
func Closest(typed string, candidates []string, aliases map[string]string) string {
	norm := func(s string) string { return strings.NewReplacer("-", "", "_", "").Replace(strings.ToLower(s)) }
	if c, ok := aliases[norm(typed)]; ok {
		return c
	}
	best, bestD := "", 3
	for _, c := range candidates {
		if norm(c) == norm(typed) {
			return c
		}
		limit := 2
		if len(c) <= 4 {
			limit = 1
		}
		if d := EditDistance(strings.ToLower(typed), strings.ToLower(c)); d <= limit && d < bestD {
			best, bestD = c, d
		}
	}
	return best
}
