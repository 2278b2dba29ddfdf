//go:build !unix

package plugins

// openNoFollow is empty where O_NOFOLLOW does not exist; the file type is
// still checked after opening.
const openNoFollow = 0

// openNonBlock is empty where O_NONBLOCK does not exist.
const openNonBlock = 0
