package kit

import (
	"errors"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

func isGone(err error) bool { return apierrors.IsNotFound(err) || apierrors.IsInvalid(err) }

func joinErrs(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return errors.Join(errs...)
}

// NamespaceTerminating reports a create refused because the namespace is
// being deleted (by its status cause, or the message when the cause is
// missing).
func NamespaceTerminating(err error) bool {
	if err == nil {
		return false
	}
	if apierrors.HasStatusCause(err, "NamespaceTerminating") {
		return true
	}
	return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "because it is being terminated")
}
