// Package msgp appends MessagePack to byte slices without reflection:
// the few forms that voik's hot replies need (API replies, acks, the
// replication's pull replies), written once here so that each encoder
// that cannot afford an encoder call per field shares them.
//
// Integers take one fixed width (uint 64, int 64) whatever their value,
// so that every integer field of a reply decodes to one type: a client
// in JavaScript gets a BigInt every time, not sometimes a Number.
package msgp

import "encoding/binary"

// AppendString appends s as a str in its shortest form.
func AppendString(dst []byte, s string) []byte {
	dst = appendStrLen(dst, len(s))
	return append(dst, s...)
}

// AppendStringBytes is AppendString of b's bytes.
func AppendStringBytes(dst []byte, b []byte) []byte {
	dst = appendStrLen(dst, len(b))
	return append(dst, b...)
}

func appendStrLen(dst []byte, n int) []byte {
	switch {
	case n < 32:
		return append(dst, 0xa0|byte(n))
	case n < 1<<8:
		return append(dst, 0xd9, byte(n))
	case n < 1<<16:
		return append(dst, 0xda, byte(n>>8), byte(n))
	}
	return append(dst, 0xdb, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// StringSize is the encoded size of a str of n bytes.
func StringSize(n int) int {
	switch {
	case n < 32:
		return 1 + n
	case n < 1<<8:
		return 2 + n
	case n < 1<<16:
		return 3 + n
	}
	return 5 + n
}

// AppendUint64 appends v as uint 64 (0xcf), whatever its value.
func AppendUint64(dst []byte, v uint64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, 0xcf), v)
}

// AppendInt64 appends v as int 64 (0xd3), whatever its value.
func AppendInt64(dst []byte, v int64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, 0xd3), uint64(v))
}

// IntSize is the encoded size of AppendUint64's and AppendInt64's.
const IntSize = 9

// AppendBool appends true or false.
func AppendBool(dst []byte, v bool) []byte {
	if v {
		return append(dst, 0xc3)
	}
	return append(dst, 0xc2)
}

// AppendNil appends nil.
func AppendNil(dst []byte) []byte { return append(dst, 0xc0) }

// AppendMapLen appends the head of a map of n pairs in its shortest form.
func AppendMapLen(dst []byte, n int) []byte { return appendLen(dst, 0x80, 0xde, n) }

// AppendArrayLen appends the head of an array of n items in its shortest
// form.
func AppendArrayLen(dst []byte, n int) []byte { return appendLen(dst, 0x90, 0xdc, n) }

func appendLen(dst []byte, fix, code16 byte, n int) []byte {
	switch {
	case n < 16:
		return append(dst, fix|byte(n))
	case n < 1<<16:
		return append(dst, code16, byte(n>>8), byte(n))
	}
	return append(dst, code16+1, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// AppendBinLen appends the head of a bin of n bytes in its shortest form.
func AppendBinLen(dst []byte, n int) []byte {
	switch {
	case n < 1<<8:
		return append(dst, 0xc4, byte(n))
	case n < 1<<16:
		return append(dst, 0xc5, byte(n>>8), byte(n))
	}
	return append(dst, 0xc6, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}
