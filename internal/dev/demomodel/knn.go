package demomodel

import (
	"math/rand/v2"
	"slices"
)

// K is how many neighbours vote.
const K = 7

// Classifier is a trained k-nearest-neighbours model.
type Classifier struct {
	// data holds the training images back to back, labels their digits.
	data   []float32
	labels []uint8
}

// Train draws n training images (n/10 of each digit) from the seeded
// generator and keeps them.
func Train(n int, seed uint64) *Classifier {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	c := &Classifier{data: make([]float32, 0, n*Side*Side), labels: make([]uint8, 0, n)}
	for i := range n {
		d := i % 10
		c.data = append(c.data, sample(rng, d)...)
		c.labels = append(c.labels, uint8(d))
	}
	return c
}

// Size is the number of training images.
func (c *Classifier) Size() int { return len(c.labels) }

// Prediction is the answer for one image.
type Prediction struct {
	Digit int `json:"digit"`
	// Confidence is the share of the K nearest neighbours that are Digit.
	Confidence float64 `json:"confidence"`
	// Votes counts the nearest neighbours of each digit, 0–9.
	Votes [10]int `json:"votes"`
}

// Predict classifies a 64-pixel image (row by row, values 0–1). Ties go to
// the digit whose voters are nearer.
func (c *Classifier) Predict(img []float32) Prediction {
	type neighbour struct {
		dist  float32
		label uint8
	}
	best := make([]neighbour, 0, K+1)
	for i, label := range c.labels {
		row := c.data[i*Side*Side : (i+1)*Side*Side]
		var dist float32
		for j, v := range row {
			diff := v - img[j]
			dist += diff * diff
		}
		if len(best) == K && dist >= best[K-1].dist {
			continue
		}
		at, _ := slices.BinarySearchFunc(best, dist, func(n neighbour, d float32) int {
			if n.dist < d {
				return -1
			}
			return 1
		})
		best = slices.Insert(best, at, neighbour{dist, label})
		if len(best) > K {
			best = best[:K]
		}
	}
	var p Prediction
	var closeness [10]float32
	for _, n := range best {
		p.Votes[n.label]++
		closeness[n.label] += 1 / (n.dist + 1e-6)
	}
	for d := range 10 {
		if p.Votes[d] > p.Votes[p.Digit] || p.Votes[d] == p.Votes[p.Digit] && closeness[d] > closeness[p.Digit] {
			p.Digit = d
		}
	}
	p.Confidence = float64(p.Votes[p.Digit]) / float64(len(best))
	return p
}
