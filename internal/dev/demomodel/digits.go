// Package demomodel is the model that `nemesis-dev dev` serves: a k-nearest-
// neighbours classifier of handwritten-looking 8×8 digits. Its training set
// is drawn at start-up from a built-in 5×7 font with random shifts, stroke
// strength and noise, so it ships in the binary and downloads nothing.
// Every prediction compares the input with the whole training set, so a
// request costs real, steady CPU time that grows with --samples.
package demomodel

import (
	"math/rand/v2"
)

// Side is the width and height of an input image.
const Side = 8

// font holds the digits 0–9, 5 wide and 7 tall.
var font = [10][7]string{
	{".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."},
	{"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."},
	{".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"},
	{"#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."},
	{"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."},
	{"#####", "#....", "####.", "....#", "....#", "#...#", ".###."},
	{"..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."},
	{"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."},
	{".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."},
	{".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."},
}

// Glyph renders digit d of the font at column dx, row dy of an 8×8 image
// (dx 0–3, dy 0–1), ink 1 and background 0.
func Glyph(d, dx, dy int) []float32 {
	img := make([]float32, Side*Side)
	for y, row := range font[d] {
		for x, c := range row {
			if c == '#' {
				img[(y+dy)*Side+x+dx] = 1
			}
		}
	}
	return img
}

// sample draws one noisy rendering of digit d: shifted, with a random
// stroke strength, per-pixel noise and a few pixels flipped.
func sample(rng *rand.Rand, d int) []float32 {
	img := Glyph(d, rng.IntN(4), rng.IntN(2))
	ink := 0.6 + 0.4*rng.Float32()
	for i, v := range img {
		v = v*ink + float32(rng.NormFloat64())*0.12
		if rng.Float32() < 0.03 {
			v = 1 - v
		}
		img[i] = min(max(v, 0), 1)
	}
	return img
}
