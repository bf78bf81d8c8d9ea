package kit

import (
	"errors"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

func isGone(err error) bool { return apierrors.IsNotFound(err) || apierrors.IsInvalid(err) }

func joinErrs(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return errors.Join(errs...)
}
