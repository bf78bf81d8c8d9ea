package discover

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
)

// requestTimeout bounds each discovery request (Source's methods take no
// context).
const requestTimeout = 30 * time.Second

// Client is a Source reading the server's (unaggregated) discovery
// documents: /api, /apis and each group version's resource list. It is
// what client-go's discovery client does without that package, which
// links client-go's scheme of every built-in API group.
type Client struct {
	rc rest.Interface
}

var _ Source = (*Client)(nil)

// NewForConfig returns a Client for the server of c.
func NewForConfig(c *rest.Config) (*Client, error) {
	cfg := rest.CopyConfig(c)
	cfg.APIPath, cfg.GroupVersion = "", nil
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(runtime.NewScheme()).WithoutConversion()
	rc, err := rest.UnversionedRESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("discovery client: %w", err)
	}
	return &Client{rc: rc}, nil
}

// get decodes the JSON document at path into out.
func (c *Client) get(path string, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	body, err := c.rc.Get().AbsPath(path).SetHeader("Accept", "application/json").DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

// ServerGroupsAndResources returns the API groups (the legacy core group
// first) and the resource list of every version they serve.
func (c *Client) ServerGroupsAndResources() ([]*metav1.APIGroup, []*metav1.APIResourceList, error) {
	var core metav1.APIVersions
	if err := c.get("/api", &core); err != nil {
		return nil, nil, err
	}
	var named metav1.APIGroupList
	if err := c.get("/apis", &named); err != nil {
		return nil, nil, err
	}
	legacy := &metav1.APIGroup{}
	for _, v := range core.Versions {
		legacy.Versions = append(legacy.Versions, metav1.GroupVersionForDiscovery{GroupVersion: v, Version: v})
	}
	if len(legacy.Versions) > 0 {
		legacy.PreferredVersion = legacy.Versions[0]
	}
	groups := []*metav1.APIGroup{legacy}
	for i := range named.Groups {
		groups = append(groups, &named.Groups[i])
	}
	var lists []*metav1.APIResourceList
	for _, g := range groups {
		for _, v := range g.Versions {
			path := "/apis/" + v.GroupVersion
			if g.Name == "" {
				path = "/api/" + v.Version
			}
			l := &metav1.APIResourceList{}
			if err := c.get(path, l); err != nil {
				return nil, nil, err
			}
			if l.GroupVersion == "" {
				l.GroupVersion = v.GroupVersion
			}
			lists = append(lists, l)
		}
	}
	return groups, lists, nil
}

// ServerPreferredResources returns, as client-go's discovery client does,
// each resource (not its subresources) once: in its group's preferred
// version, or else in the first version (in the server's order) that
// serves it.
func (c *Client) ServerPreferredResources() ([]*metav1.APIResourceList, error) {
	groups, lists, err := c.ServerGroupsAndResources()
	if err != nil {
		return nil, err
	}
	byGV := map[string]*metav1.APIResourceList{}
	for _, l := range lists {
		byGV[l.GroupVersion] = l
	}
	var out []*metav1.APIResourceList
	for _, g := range groups {
		// The preferred version first, then the others in order.
		versions := []metav1.GroupVersionForDiscovery{g.PreferredVersion}
		for _, v := range g.Versions {
			if v.GroupVersion != g.PreferredVersion.GroupVersion {
				versions = append(versions, v)
			}
		}
		seen := map[schema.GroupResource]bool{}
		for _, v := range versions {
			l := byGV[v.GroupVersion]
			if l == nil {
				continue
			}
			pl := &metav1.APIResourceList{GroupVersion: l.GroupVersion}
			for _, r := range l.APIResources {
				if strings.Contains(r.Name, "/") {
					continue
				}
				gr := schema.GroupResource{Group: g.Name, Resource: r.Name}
				if seen[gr] {
					continue
				}
				seen[gr] = true
				pl.APIResources = append(pl.APIResources, r)
			}
			if len(pl.APIResources) > 0 {
				out = append(out, pl)
			}
		}
	}
	return out, nil
}
