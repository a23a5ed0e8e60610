package textmodel

import (
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strings"
)

// Bigram is a word bigram model: for each word, the words that followed it
// in the training text, as often as they did.
type Bigram struct {
	next  map[string][]string
	start []string
}

// Train reads text as words (punctuation stays on its word) and counts
// which word follows which.
func Train(text string) *Bigram {
	m := &Bigram{next: map[string][]string{}}
	for _, line := range strings.Split(text, "\n") {
		words := strings.Fields(line)
		if len(words) == 0 {
			continue
		}
		m.start = append(m.start, words[0])
		for i := 1; i < len(words); i++ {
			m.next[words[i-1]] = append(m.next[words[i-1]], words[i])
		}
	}
	return m
}

// Generate returns n tokens (words with their leading space, as a
// tokenizer's) that continue prompt. The same prompt gives the same tokens.
func (m *Bigram) Generate(prompt string, n int) []string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(prompt))
	rng := rand.New(rand.NewPCG(h.Sum64(), 1))
	words := strings.Fields(prompt)
	word := ""
	if len(words) > 0 {
		word = words[len(words)-1]
	}
	out := make([]string, 0, n)
	for range n {
		choices := m.next[word]
		if len(choices) == 0 {
			// An unknown word or a text's last: start a sentence afresh.
			choices = m.start
		}
		word = choices[rng.IntN(len(choices))]
		out = append(out, " "+word)
	}
	return out
}

// Vocabulary is the number of distinct words the model knows.
func (m *Bigram) Vocabulary() int {
	seen := slices.Clone(m.start)
	for w, next := range m.next {
		seen = append(seen, w)
		seen = append(seen, next...)
	}
	slices.Sort(seen)
	return len(slices.Compact(seen))
}
