package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	sandboxv1 "github.com/sandbox-shim/sandbox-shim/api/sandbox/v1"
	"github.com/sandbox-shim/sandbox-shim/client"
)

// env sets the sandbox's env vars and prints a warning per secret-looking
// key on stderr.
func (cli *commandLine) env(ctx context.Context, args []string) error {
	p, err := parseArgs(flag.NewFlagSet("env", flag.ContinueOnError), args)
	if err != nil {
		return err
	}
	c, rest, err := cli.sandbox("env", append(p.positional, p.command...))
	if err != nil {
		return err
	}
	defer c.Close()
	if len(rest) == 0 {
		return usageError("env: no K=V")
	}
	vars, err := setArguments(rest)
	if err != nil {
		return err
	}
	var warnings []string
	if err := cli.call(c, func() error {
		warnings, err = c.SetEnvVars(ctx, vars)
		return err
	}); err != nil {
		return err
	}
	for _, warning := range warnings {
		fmt.Fprintf(cli.stderr, "sandboxctl: warning: %s\n", warning)
	}
	return nil
}

// showFlags parses the flags of info and audit and returns the client of
// the sandbox they name.
func (cli *commandLine) showFlags(name string, fs *flag.FlagSet, args []string) (*client.Client, error) {
	p, err := parseArgs(fs, args)
	if err != nil {
		return nil, err
	}
	c, rest, err := cli.sandbox(name, p.positional)
	if err != nil {
		return nil, err
	}
	if len(rest) > 0 || p.command != nil {
		c.Close()
		return nil, usageError("%s: unexpected arguments", name)
	}
	return c, nil
}

func (cli *commandLine) info(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("info", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "")
	c, err := cli.showFlags("info", fs, args)
	if err != nil {
		return err
	}
	defer c.Close()
	var info *sandboxv1.InfoResponse
	if err := cli.call(c, func() error {
		info, err = c.Info(ctx)
		return err
	}); err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(cli.stdout, info, true)
	}
	return writeInfo(cli.stdout, info)
}

func (cli *commandLine) audit(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "")
	limit := fs.Int("limit", 0, "")
	c, err := cli.showFlags("audit", fs, args)
	if err != nil {
		return err
	}
	defer c.Close()
	var records []*sandboxv1.AuditRecord
	if err := cli.call(c, func() error {
		records, err = c.Audit(ctx, *limit)
		return err
	}); err != nil {
		return err
	}
	if *asJSON {
		for _, record := range records {
			if err := writeJSON(cli.stdout, record, false); err != nil {
				return err
			}
		}
		return nil
	}
	return writeAudit(cli.stdout, records)
}

// writeJSON writes m in the API's JSON form (protobuf's, as curl gets it)
// with every field, zero values included; indented, or on one line.
// protojson's own spacing varies on purpose, so it is normalised here.
func writeJSON(w io.Writer, m proto.Message, indent bool) error {
	raw, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	var out bytes.Buffer
	if indent {
		err = json.Indent(&out, raw, "", "  ")
	} else {
		err = json.Compact(&out, raw)
	}
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	out.WriteByte('\n')
	_, err = w.Write(out.Bytes())
	return err
}

// callerNames are the callers as people say them.
var callerNames = map[sandboxv1.Caller]string{
	sandboxv1.Caller_CALLER_HOST:          "host",
	sandboxv1.Caller_CALLER_CONTROL_PLANE: "control-plane",
}

func callerName(caller sandboxv1.Caller) string {
	if name, ok := callerNames[caller]; ok {
		return name
	}
	return "unknown"
}

func writeInfo(w io.Writer, info *sandboxv1.InfoResponse) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "sandbox:\t%s/%s\n", info.GetNamespace(), info.GetSandboxId())
	fmt.Fprintf(tw, "caller:\t%s\n", callerName(info.GetCaller()))
	if info.GetHasSecureExecution() {
		fmt.Fprintf(tw, "secure execution:\tavailable\n")
	} else {
		fmt.Fprintf(tw, "secure execution:\tunavailable: %s\n", strings.Join(info.GetSecureExecutionUnavailable(), "; "))
	}
	fmt.Fprintf(tw, "env keys:\t%s\n", orNone(strings.Join(info.GetEnvKeys(), " ")))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "protections:")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, p := range info.GetProtections() {
		state := "active"
		if !p.GetActive() {
			state = "inactive"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", p.GetName(), state, p.GetDescription(), parameters(p.GetParameters()))
	}
	return tw.Flush()
}

// parameters prints a protection's parameters as k=v, sorted.
func parameters(params map[string]string) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + params[k]
	}
	return strings.Join(keys, " ")
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func writeAudit(w io.Writer, records []*sandboxv1.AuditRecord) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tCALL\tCALLER\tISOLATED\tEXIT\tDURATION\tENV KEYS\tCWD\tCOMMAND")
	for _, r := range records {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%s\t%s\t%s\t%s\t%s\n",
			r.GetTime().AsTime().UTC().Format(time.RFC3339Nano), r.GetCallId(), callerName(r.GetCaller()), r.GetIsolated(),
			auditExit(r), r.GetDuration().AsDuration().Round(time.Microsecond), orNone(strings.Join(r.GetEnvKeys(), ",")),
			orNone(r.GetCwd()), quoteArgv(r.GetArgv()))
	}
	return tw.Flush()
}

// auditExit says how a recorded call ended.
func auditExit(r *sandboxv1.AuditRecord) string {
	switch {
	case r.GetError() != "":
		return "error: " + r.GetError()
	case r.GetTimedOut():
		return "timed-out"
	case r.GetSignal() != 0:
		return "signal-" + strconv.Itoa(int(r.GetSignal()))
	}
	return strconv.Itoa(int(r.GetExitCode()))
}

// quoteArgv prints argv as a shell would read it back.
func quoteArgv(argv []string) string {
	words := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r == '-' || r == '_' || r == '.' || r == '/' || r == '=' || r == ':' || r == ',' || r == '+' || r == '@' || r == '%' ||
				('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9'))
		}) < 0 {
			words[i] = a
			continue
		}
		words[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(words, " ")
}
