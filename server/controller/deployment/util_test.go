package deployment

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func rolling(replicas int32, surge, unavail intstr.IntOrString) *appsv1.Deployment {
	return &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Replicas: &replicas, Strategy: appsv1.DeploymentStrategy{
		Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: &surge, MaxUnavailable: &unavail}}}}
}

func TestFenceposts(t *testing.T) {
	for _, tc := range []struct {
		replicas       int32
		surge, unavail intstr.IntOrString
		wantS, wantU   int32
	}{
		{10, intstr.FromString("25%"), intstr.FromString("25%"), 3, 2},
		{3, intstr.FromString("25%"), intstr.FromString("25%"), 1, 0},
		{3, intstr.FromInt32(0), intstr.FromInt32(0), 0, 1},
		{4, intstr.FromString("50%"), intstr.FromString("50%"), 2, 2},
		{5, intstr.FromInt32(2), intstr.FromString("30%"), 2, 1},
		{1, intstr.FromString("1%"), intstr.FromString("99%"), 1, 0},
	} {
		s, u, err := Fenceposts(rolling(tc.replicas, tc.surge, tc.unavail))
		if err != nil || s != tc.wantS || u != tc.wantU {
			t.Errorf("%d replicas surge %s unavail %s: got %d/%d (%v), want %d/%d", tc.replicas, tc.surge.String(), tc.unavail.String(), s, u, err, tc.wantS, tc.wantU)
		}
	}
	if _, _, err := Fenceposts(rolling(3, intstr.FromString("abc"), intstr.FromInt32(1))); err == nil {
		t.Error("bad percentage accepted")
	}
}

func TestTemplateHash(t *testing.T) {
	tmpl := &corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "x"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i:1"}}}}
	h1 := TemplateHash(tmpl, nil)
	withLabel := tmpl.DeepCopy()
	withLabel.Labels[HashLabel] = h1
	if TemplateHash(withLabel, nil) != h1 {
		t.Fatal("hash depends on the hash label")
	}
	if !EqualIgnoreHash(tmpl, withLabel) {
		t.Fatal("templates differing by hash label not equal")
	}
	one := int32(1)
	if TemplateHash(tmpl, &one) == h1 {
		t.Fatal("collision count does not change the hash")
	}
	other := tmpl.DeepCopy()
	other.Spec.Containers[0].Image = "i:2"
	if TemplateHash(other, nil) == h1 || EqualIgnoreHash(tmpl, other) {
		t.Fatal("different templates hash or compare equal")
	}
}
