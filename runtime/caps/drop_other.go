//go:build !linux

package caps

import "errors"

// DropTo is Linux-only: capabilities are a Linux notion.
func DropTo(keep ...Cap) (Set, error) {
	return 0, errors.New("caps: dropping capabilities is only supported on Linux")
}
