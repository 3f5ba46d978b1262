package integration

import (
	"net"
	"strconv"
	"testing"

	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandbox-shim/sandbox-shim/api"
	"github.com/sandbox-shim/sandbox-shim/test/harness"
)

// TestReservedPortsBadInput: a malformed reserved-ports annotation, a port already taken in
// the namespace the bundle names, and reserved ports on the host's network namespace each
// fail Create with an error naming the cause, and leave nothing behind.
func TestReservedPortsBadInput(t *testing.T) {
	skipUnderRunc(t, "reserved ports are this runtime's")
	network, err := harness.NewSandboxNetwork()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := network.Close(); err != nil {
			t.Error(err)
		}
	}()
	var taken net.Listener
	if err := harness.InNetns(network.Path(), func() error {
		taken, err = net.Listen("tcp", "127.0.0.1:8888")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	inNetwork := oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: network.Path()})
	for _, tc := range []struct {
		name  string
		opts  []oci.SpecOpts
		words []string
	}{
		{"not a port", []oci.SpecOpts{withAnnotations(api.AnnotationReservedPorts, "8080,abc")}, []string{api.AnnotationReservedPorts, strconv.Quote("8080,abc")}},
		{"zero", []oci.SpecOpts{withAnnotations(api.AnnotationReservedPorts, "0")}, []string{api.AnnotationReservedPorts, `"0"`}},
		{"twice", []oci.SpecOpts{withAnnotations(api.AnnotationReservedPorts, "8080,8080")}, []string{api.AnnotationReservedPorts, "listed twice"}},
		{"user-connect", []oci.SpecOpts{withAnnotations(api.AnnotationReservedPortsUserConnect, "yes")}, []string{api.AnnotationReservedPortsUserConnect, `"yes"`}},
		{"port taken", []oci.SpecOpts{inNetwork}, []string{"8888", "address already in use", api.AnnotationReservedPorts}},
		{"host network", []oci.SpecOpts{oci.WithHostNamespace(specs.NetworkNamespace)}, []string{"host's", api.AnnotationReservedPorts}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			c := newContainer(t, ctx, newID(t), append([]oci.SpecOpts{oci.WithProcessArgs("true")}, tc.opts...)...)
			err := createAndStart(t, ctx, c)
			errNames(t, err, "create with "+tc.name, tc.words...)
			t.Logf("error: %v", err)
			failedCreateLeavesNothing(t, ctx, c)
		})
	}
	// The port taken stays free of anything the failed Create made: 8080 of the same
	// namespace can still be reserved by a sandbox that reserves only it.
	ctx := testCtx(t)
	c := newContainer(t, ctx, newID(t), oci.WithProcessArgs("true"), inNetwork, withAnnotations(api.AnnotationReservedPorts, "8080"))
	if err := createAndStart(t, ctx, c); err != nil {
		t.Errorf("8080 alone in the namespace where 8888 is taken: %v", err)
	}
	assertContainerWorks(t, ctx)
}

// TestReservedPortsOptOut: with the annotation empty, a sandbox on the host's network
// namespace runs (nothing is reserved there).
func TestReservedPortsOptOut(t *testing.T) {
	skipUnderRunc(t, "reserved ports are this runtime's")
	ctx := testCtx(t)
	c := newContainer(t, ctx, newID(t), oci.WithProcessArgs("echo", "ok"),
		oci.WithHostNamespace(specs.NetworkNamespace), withAnnotations(api.AnnotationReservedPorts, ""))
	var out syncBuffer
	task, exitCh := startTask(t, ctx, c, ioCreator(nil, &out, &out, false))
	if st := waitExit(t, exitCh, stepTimeout); st.ExitCode() != 0 || out.String() != "ok\n" {
		t.Fatalf("exit %d, output %q", st.ExitCode(), out.String())
	}
	deleteProcess(t, ctx, task)
}
