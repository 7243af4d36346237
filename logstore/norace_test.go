//go:build !race

package logstore

// storeRaceEnabled says the race detector is on: slow tests do less.
const storeRaceEnabled = false
