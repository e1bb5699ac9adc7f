package app

// Tests of the deployment files under deploy/: the Nomad jobs (parsed with
// HCL, their rendered configurations loaded by the config loader), the
// example configurations, the systemd unit, the Prometheus alerting rules
// and the Grafana dashboard (every query valid PromQL on real metric names).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"text/template"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
	"gopkg.in/yaml.v3"

	"github.com/klaxon-dev/klaxon/cmd/internal/httpapi"
	"github.com/klaxon-dev/klaxon/internal/externaltest"
)

const deployDir = "../../../deploy"

// hclBlock is a parsed HCL block with the job file's variables for
// evaluation.
type hclBlock struct {
	t      *testing.T
	src    []byte
	body   *hclsyntax.Body
	ctx    *hcl.EvalContext
	labels []string
	name   string // type and labels, for messages
}

// parseJob parses a Nomad job file and returns its job block; variables
// take their defaults, overridden by vars, and locals are evaluated with
// them. Like Nomad, it expands dynamic blocks (see blocks).
func parseJob(t *testing.T, path string, vars map[string]cty.Value) hclBlock {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, diags := hclsyntax.ParseConfig(src, path, hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("%s", diags.Error())
	}
	body := f.Body.(*hclsyntax.Body)
	values := map[string]cty.Value{}
	var job *hclsyntax.Block
	var locals []*hclsyntax.Attribute
	for _, b := range body.Blocks {
		switch b.Type {
		case "variable":
			if len(b.Labels) != 1 {
				t.Fatalf("%s: variable without a name", b.DefRange())
			}
			def, ok := b.Body.Attributes["default"]
			if !ok {
				continue
			}
			v, diags := def.Expr.Value(nil)
			if diags.HasErrors() {
				t.Fatalf("variable %s: %s", b.Labels[0], diags.Error())
			}
			values[b.Labels[0]] = v
		case "locals":
			locals = append(locals, slices.Collect(maps.Values(b.Body.Attributes))...)
		case "job":
			if job != nil {
				t.Fatalf("%s: two job blocks", path)
			}
			job = b
		default:
			t.Fatalf("%s: unexpected top-level block %q", b.DefRange(), b.Type)
		}
	}
	if job == nil {
		t.Fatalf("%s: no job block", path)
	}
	for k, v := range vars {
		if _, ok := values[k]; !ok {
			t.Fatalf("%s: no variable %q", path, k)
		}
		values[k] = v
	}
	ctx := &hcl.EvalContext{
		Variables: map[string]cty.Value{"var": cty.ObjectVal(values)},
		// The functions of Nomad's job files that the jobs use.
		Functions: map[string]function.Function{"chomp": stdlib.ChompFunc},
	}
	// Locals may use each other: evaluate those whose inputs are known
	// until none is left.
	local := map[string]cty.Value{}
	for len(locals) > 0 {
		ctx.Variables["local"] = cty.ObjectVal(local)
		var later []*hclsyntax.Attribute
		var errs hcl.Diagnostics
		for _, a := range locals {
			v, diags := a.Expr.Value(ctx)
			if diags.HasErrors() {
				later, errs = append(later, a), append(errs, diags...)
				continue
			}
			local[a.Name] = v
		}
		if len(later) == len(locals) {
			t.Fatalf("%s: locals: %s", path, errs.Error())
		}
		locals = later
	}
	ctx.Variables["local"] = cty.ObjectVal(local)
	return hclBlock{t: t, src: src, body: job.Body, ctx: ctx, labels: job.Labels, name: "job " + strings.Join(job.Labels, " ")}
}

// blocks returns the nested blocks of a type, those a dynamic block of
// that type makes included: one per element of its for_each, with its
// content as the body and the iterator (named after the type, or by
// iterator) as a variable.
func (b hclBlock) blocks(typ string) []hclBlock {
	b.t.Helper()
	var out []hclBlock
	child := func(body *hclsyntax.Body, ctx *hcl.EvalContext, labels []string) hclBlock {
		return hclBlock{t: b.t, src: b.src, body: body, ctx: ctx, labels: labels, name: b.name + " > " + strings.Join(append([]string{typ}, labels...), " ")}
	}
	for _, c := range b.body.Blocks {
		switch {
		case c.Type == typ:
			out = append(out, child(c.Body, b.ctx, c.Labels))
		case c.Type == "dynamic" && len(c.Labels) == 1 && c.Labels[0] == typ:
			dyn := hclBlock{t: b.t, src: b.src, body: c.Body, ctx: b.ctx, name: b.name + " > dynamic " + typ}
			iter := typ
			if a, ok := c.Body.Attributes["iterator"]; ok {
				iter = hcl.ExprAsKeyword(a.Expr)
			}
			content := dyn.block("content")
			forEach, src, ok := dyn.value("for_each")
			if !ok || !forEach.CanIterateElements() {
				b.t.Fatalf("%s: for_each = %s: not a collection", dyn.name, src)
			}
			for it := forEach.ElementIterator(); it.Next(); {
				k, v := it.Element()
				ctx := b.ctx.NewChild()
				ctx.Variables = map[string]cty.Value{iter: cty.ObjectVal(map[string]cty.Value{"key": k, "value": v})}
				var labels []string
				if dyn.has("labels") {
					labels = hclBlock{t: b.t, src: b.src, body: c.Body, ctx: ctx, name: dyn.name}.list("labels")
				}
				out = append(out, child(content.body, ctx, labels))
			}
		}
	}
	return out
}

// block returns the one nested block of a type.
func (b hclBlock) block(typ string) hclBlock {
	b.t.Helper()
	bs := b.blocks(typ)
	if len(bs) != 1 {
		b.t.Fatalf("%s: %d %s blocks, want 1", b.name, len(bs), typ)
	}
	return bs[0]
}

// labeled returns the nested block of a type with the given label.
func (b hclBlock) labeled(typ, label string) hclBlock {
	b.t.Helper()
	for _, c := range b.blocks(typ) {
		if len(c.labels) == 1 && c.labels[0] == label {
			return c
		}
	}
	b.t.Fatalf("%s: no %s %q", b.name, typ, label)
	return hclBlock{}
}

// value evaluates an attribute with the job's variables. Runtime
// interpolations (${attr.…}, ${NOMAD_…}) cannot be evaluated here; for
// those ok is false and src is the expression's source text, in which,
// as Nomad does, the interpolations the job's variables resolve are
// replaced by their values.
func (b hclBlock) value(name string) (v cty.Value, src string, ok bool) {
	b.t.Helper()
	a, found := b.body.Attributes[name]
	if !found {
		b.t.Fatalf("%s: no attribute %s", b.name, name)
	}
	src = string(a.Expr.Range().SliceBytes(b.src))
	v, diags := a.Expr.Value(b.ctx)
	if diags.HasErrors() {
		if tmpl, ok := a.Expr.(*hclsyntax.TemplateExpr); ok {
			var s strings.Builder
			for _, p := range tmpl.Parts {
				if pv, d := p.Value(b.ctx); !d.HasErrors() && pv.Type() == cty.String {
					s.WriteString(pv.AsString())
				} else {
					s.WriteString("${" + string(p.Range().SliceBytes(b.src)) + "}")
				}
			}
			src = `"` + s.String() + `"`
		}
	}
	return v, src, !diags.HasErrors()
}

// str returns a string attribute: its value, or its source text when it
// holds runtime interpolations.
func (b hclBlock) str(name string) string {
	b.t.Helper()
	v, src, ok := b.value(name)
	if !ok {
		return src
	}
	if v.Type() != cty.String {
		b.t.Fatalf("%s: %s is %s, want a string", b.name, name, v.Type().FriendlyName())
	}
	return v.AsString()
}

// num returns a number attribute.
func (b hclBlock) num(name string) int {
	b.t.Helper()
	v, src, ok := b.value(name)
	if !ok || v.Type() != cty.Number {
		b.t.Fatalf("%s: %s = %s, want a number", b.name, name, src)
	}
	n, _ := v.AsBigFloat().Int64()
	return int(n)
}

// list returns a list attribute's elements: values, or source text of
// elements with runtime interpolations.
func (b hclBlock) list(name string) []string {
	b.t.Helper()
	a, found := b.body.Attributes[name]
	if !found {
		b.t.Fatalf("%s: no attribute %s", b.name, name)
	}
	if v, diags := a.Expr.Value(b.ctx); !diags.HasErrors() && v.CanIterateElements() {
		var out []string
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			if e.Type() != cty.String {
				b.t.Fatalf("%s: %s has a %s element", b.name, name, e.Type().FriendlyName())
			}
			out = append(out, e.AsString())
		}
		return out
	}
	exprs, diags := hcl.ExprList(a.Expr)
	if diags.HasErrors() {
		b.t.Fatalf("%s: %s: %s", b.name, name, diags.Error())
	}
	var out []string
	for _, e := range exprs {
		if v, d := e.Value(b.ctx); !d.HasErrors() && v.Type() == cty.String {
			out = append(out, v.AsString())
		} else {
			out = append(out, strings.Trim(string(e.Range().SliceBytes(b.src)), `"`))
		}
	}
	return out
}

func (b hclBlock) has(name string) bool {
	_, ok := b.body.Attributes[name]
	return ok
}

// kernelConstraint returns the value of the block's ${attr.kernel.name}
// constraint ("" when none).
func (b hclBlock) kernelConstraint() string {
	for _, c := range b.blocks("constraint") {
		if c.has("attribute") && c.str("attribute") == `"${attr.kernel.name}"` {
			if c.has("operator") && c.str("operator") != "=" {
				b.t.Fatalf("%s: kernel constraint with operator %q", c.name, c.str("operator"))
			}
			return c.str("value")
		}
	}
	return ""
}

// renderTemplate renders a task's template block like Nomad would: the HCL
// interpolations with the job's variables, then the consul-template
// functions env and nomadVar with sample values.
func renderTemplate(t *testing.T, tmpl hclBlock, env map[string]string, vars map[string]map[string]string) string {
	t.Helper()
	data := tmpl.str("data")
	if strings.Contains(data, "${") {
		t.Fatalf("%s: data has interpolations the job's variables do not resolve:\n%s", tmpl.name, data)
	}
	tp, err := template.New(tmpl.name).Option("missingkey=error").Funcs(template.FuncMap{
		"env": func(k string) (string, error) {
			v, ok := env[k]
			if !ok {
				return "", fmt.Errorf("env %q: not set by Nomad in this test", k)
			}
			return v, nil
		},
		"nomadVar": func(path string) (map[string]string, error) {
			v, ok := vars[path]
			if !ok {
				return nil, fmt.Errorf("nomadVar %q: no such variable", path)
			}
			return v, nil
		},
	}).Parse(data)
	if err != nil {
		t.Fatalf("%s: %v", tmpl.name, err)
	}
	var out bytes.Buffer
	if err := tp.Execute(&out, nil); err != nil {
		t.Fatalf("%s: %v", tmpl.name, err)
	}
	return out.String()
}

// checkRestart checks a group's restart block.
func checkRestart(t *testing.T, g hclBlock) {
	t.Helper()
	r := g.block("restart")
	if r.num("attempts") < 1 {
		t.Errorf("%s: restart.attempts < 1", g.name)
	}
	if m := r.str("mode"); m != "delay" && m != "fail" {
		t.Errorf("%s: restart.mode %q", g.name, m)
	}
}

// checkTask checks a task's driver, resources and that its command runs
// role with --config FILE, FILE being the task's rendered template; it
// returns the configuration the template renders, loaded by ParseConfig.
func checkTask(t *testing.T, task hclBlock, driver, role string, env map[string]string, vars map[string]map[string]string) *Config {
	t.Helper()
	if d := task.str("driver"); d != driver {
		t.Errorf("%s: driver %q, want %q", task.name, d, driver)
	}
	res := task.block("resources")
	if res.num("cpu") < 100 || res.num("memory") < 64 {
		t.Errorf("%s: resources cpu %d memory %d: too small", task.name, res.num("cpu"), res.num("memory"))
	}
	args := task.block("config").list("args")
	i := slices.Index(args, "--config")
	if len(args) == 0 || args[0] != role || i < 0 || i+1 >= len(args) {
		t.Fatalf("%s: args %q, want %s --config FILE", task.name, args, role)
	}
	if !strings.HasPrefix(task.block("config").str("command"), "local/") {
		t.Errorf("%s: command %q not from the artifact in local/", task.name, task.block("config").str("command"))
	}
	checkArtifact(t, task)
	cfgFile := path.Base(strings.ReplaceAll(args[i+1], `\`, "/"))
	tmpl := task.block("template")
	if dest := tmpl.str("destination"); dest != "local/"+cfgFile {
		t.Errorf("%s: template destination %q, but the command reads %s", task.name, dest, args[i+1])
	}
	text := renderTemplate(t, tmpl, env, vars)
	dir := t.TempDir()
	cfg, err := ParseConfig(filepath.Join(dir, cfgFile), []byte(text))
	if err != nil {
		t.Fatalf("%s: the rendered configuration does not load: %v\n%s", task.name, err, text)
	}
	if !strings.Contains(text, "# role: "+role) {
		t.Errorf("%s: the rendered configuration does not say its role", task.name)
	}
	return cfg
}

// checkWorkloadIdentity checks that a task talks to Nomad as the deploy
// jobs promise: its workload identity in NOMAD_TOKEN (identity { env =
// true }) and the task API socket in NOMAD_ADDR (${NOMAD_UNIX_ADDR}), no
// static token.
func checkWorkloadIdentity(t *testing.T, task hclBlock) {
	t.Helper()
	id := task.block("identity")
	if v, src, ok := id.value("env"); !ok || v.Type() != cty.Bool || !v.True() {
		t.Errorf("%s: identity.env = %s, want true (NOMAD_TOKEN from the workload identity)", task.name, src)
	}
	if addr := task.block("env").str("NOMAD_ADDR"); addr != `"${NOMAD_UNIX_ADDR}"` {
		t.Errorf("%s: env NOMAD_ADDR = %s, want the task API socket ${NOMAD_UNIX_ADDR}", task.name, addr)
	}
}

// taskNomadEnv sets the variables Nomad gives a task with identity { env =
// true } and NOMAD_ADDR = "${NOMAD_UNIX_ADDR}", as klaxon will read them.
func taskNomadEnv(t *testing.T) (addr, token string) {
	addr, token = "unix:///var/nomad/alloc/5c6328f7/task/secrets/api.sock", "eyJhbGciOiJSUzI1NiJ9.workload.identity"
	for _, k := range []string{"NOMAD_CACERT", "NOMAD_CAPATH", "NOMAD_CLIENT_CERT", "NOMAD_CLIENT_KEY", "NOMAD_TLS_SERVER_NAME", "NOMAD_SKIP_VERIFY"} {
		t.Setenv(k, "")
	}
	t.Setenv("NOMAD_ADDR", addr)
	t.Setenv("NOMAD_TOKEN", token)
	t.Setenv("NOMAD_NAMESPACE", "default") // the job's, set by Nomad in every task
	t.Setenv("NOMAD_REGION", "global")
	return addr, token
}

// nomadEnv are the values the tests give consul-template's env.
func nomadEnv(t *testing.T) map[string]string {
	dir := t.TempDir()
	return map[string]string{
		"node.unique.name": "client-7",
		"NOMAD_ADDR_http":  "10.1.2.3:9464",
		"NOMAD_ALLOC_DIR":  filepath.Join(dir, "alloc"),
		"NOMAD_TASK_DIR":   filepath.Join(dir, "local"),
	}
}

func TestNomadIngestJob(t *testing.T) {
	const url = "tls://nats-a:4222,tls://nats-b:4222"
	job := parseJob(t, filepath.Join(deployDir, "nomad/klaxon-ingest.nomad.hcl"), map[string]cty.Value{"nats_url": cty.StringVal(url)})
	if typ := job.str("type"); typ != "system" {
		t.Errorf("type %q, want system", typ)
	}
	if dcs := job.list("datacenters"); len(dcs) == 0 {
		t.Error("no datacenters")
	}
	if pool := job.str("node_pool"); pool != "all" {
		t.Errorf("node_pool %q: a system job over every client wants \"all\"", pool)
	}
	vars := map[string]map[string]string{"nomad/jobs/klaxon-ingest": {"nats_token": "nats-secret", "http_token": "http-secret"}}
	groups := job.blocks("group")
	if len(groups) != 2 {
		t.Fatalf("%d groups, want linux and windows", len(groups))
	}
	for _, goos := range []string{"linux", "windows"} {
		t.Run(goos, func(t *testing.T) {
			g := job.labeled("group", goos)
			g.t = t
			if k := g.kernelConstraint(); k != goos {
				t.Errorf("kernel constraint %q, want %q", k, goos)
			}
			if g.has("count") {
				t.Error("a system job's group has no count")
			}
			checkRestart(t, g)
			if port := g.block("network").labeled("port", "http"); port.num("static") != 9464 {
				t.Errorf("http port %d", port.num("static"))
			}
			svc := g.block("service")
			if svc.str("port") != "http" || svc.block("check").str("path") != "/readyz" {
				t.Errorf("service: port %q, check path %q", svc.str("port"), svc.block("check").str("path"))
			}
			task := g.labeled("task", "ingest")
			checkWorkloadIdentity(t, task)
			sock, wi := taskNomadEnv(t)
			cfg := checkTask(t, task, "raw_exec", "ingest", nomadEnv(t), vars)
			if cfg.Nomad.Address != sock || cfg.Nomad.Token.Reveal() != wi {
				t.Errorf("nomad %q (token set %v): want the task API socket and the workload identity", cfg.Nomad.Address, cfg.Nomad.Token.IsSet())
			}
			if cfg.NATS.URL != url {
				t.Errorf("nats.url %q, want the job variable %q", cfg.NATS.URL, url)
			}
			if cfg.NATS.Token.Reveal() != "nats-secret" || cfg.HTTP.Token.Reveal() != "http-secret" {
				t.Error("tokens do not come from the Nomad Variable")
			}
			if cfg.Node != "client-7" {
				t.Errorf("node %q, want the Nomad node name", cfg.Node)
			}
			if cfg.HTTP.Listen != "10.1.2.3:9464" {
				t.Errorf("http.listen %q", cfg.HTTP.Listen)
			}
			if len(cfg.Sources.NomadLog) != 1 || len(cfg.Sources.NomadLog[0].Paths) != 1 {
				t.Fatalf("nomad_log sources %+v", cfg.Sources.NomadLog)
			}
			logPath := cfg.Sources.NomadLog[0].Paths[0]
			switch goos {
			case "linux":
				if logPath != "/var/log/nomad/nomad*.log" || cfg.DataDir != "/var/lib/klaxon" {
					t.Errorf("log %q, data_dir %q", logPath, cfg.DataDir)
				}
				if cfg.Sources.WinEvt != nil {
					t.Error("winevt on Linux")
				}
			case "windows":
				if !strings.HasSuffix(logPath, `C:\ProgramData\nomad\logs\nomad*.log`) {
					t.Errorf("log %q", logPath)
				}
				if cfg.Sources.WinEvt == nil || !slices.Equal(cfg.Sources.WinEvt.Channels, []string{"System", "Application"}) {
					t.Errorf("winevt %+v, want the System and Application channels", cfg.Sources.WinEvt)
				}
			}
		})
	}
}

func TestNomadCorrelateJob(t *testing.T) {
	const ui = "https://nomad.example.com"
	job := parseJob(t, filepath.Join(deployDir, "nomad/klaxon-correlate.nomad.hcl"), map[string]cty.Value{"nomad_ui_url": cty.StringVal(ui)})
	if typ := job.str("type"); typ != "service" {
		t.Errorf("type %q, want service", typ)
	}
	if dcs := job.list("datacenters"); len(dcs) == 0 {
		t.Error("no datacenters")
	}
	if job.str("node_pool") == "" {
		t.Error("no node_pool")
	}
	if k := job.kernelConstraint(); k != "linux" {
		t.Errorf("kernel constraint %q", k)
	}
	if !job.block("update").has("auto_revert") {
		t.Error("update without auto_revert")
	}
	vars := map[string]map[string]string{"nomad/jobs/klaxon-correlate": {"nats_token": "n", "http_token": "h"}}
	sock, wi := taskNomadEnv(t)

	g := job.labeled("group", "correlate")
	if n := g.num("count"); n < 2 {
		t.Errorf("correlate count %d, want at least 2", n)
	}
	distinct := false
	for _, c := range g.blocks("constraint") {
		distinct = distinct || (c.has("operator") && c.str("operator") == "distinct_hosts")
	}
	if !distinct {
		t.Error("correlator replicas may share a host: no distinct_hosts constraint")
	}
	checkRestart(t, g)
	g.block("network").labeled("port", "http")
	svc := g.block("service")
	check := svc.block("check")
	if svc.str("port") != "http" || check.str("type") != "http" || check.str("path") != "/readyz" {
		t.Errorf("service port %q, check %q %q: want an http check of /readyz on the http port", svc.str("port"), check.str("type"), check.str("path"))
	}
	cfg := checkTask(t, g.labeled("task", "correlate"), "exec", "correlate", nomadEnv(t), vars)
	if cfg.NATS.URL == "" || cfg.NATS.Replicas != 3 {
		t.Errorf("nats url %q replicas %d", cfg.NATS.URL, cfg.NATS.Replicas)
	}
	if p := cfg.Correlator.Partitions; p != g.num("count") {
		t.Errorf("correlator.partitions %d, want one per replica (%d)", p, g.num("count"))
	}
	if len(cfg.Sources.NomadLog)+len(cfg.Sources.NomadEvents) != 0 {
		t.Error("the correlator reads sources")
	}
	if cfg.HTTP.Listen != "10.1.2.3:9464" || !cfg.HTTP.Token.IsSet() {
		t.Errorf("http %q (token set %v)", cfg.HTTP.Listen, cfg.HTTP.Token.IsSet())
	}
	if cfg.Nomad.uiBase() != ui || cfg.Correlator.nomadUI != ui {
		t.Errorf("nomad.ui_url %q: incidents do not link to the Nomad UI of the job variable", cfg.Nomad.UIURL)
	}

	ev := job.labeled("group", "events")
	if ev.num("count") != 1 {
		t.Errorf("events count %d", ev.num("count"))
	}
	disk := ev.block("ephemeral_disk")
	for _, k := range []string{"sticky", "migrate"} {
		if v, src, ok := disk.value(k); !ok || v.Type() != cty.Bool || !v.True() {
			t.Errorf("ephemeral_disk.%s = %s: the event-stream checkpoint does not follow the allocation", k, src)
		}
	}
	evTask := ev.labeled("task", "events")
	checkWorkloadIdentity(t, evTask)
	ecfg := checkTask(t, evTask, "exec", "ingest", nomadEnv(t), vars)
	// The stream: through the socket with the workload identity, every
	// namespace although Nomad sets NOMAD_NAMESPACE to the job's.
	if es := ecfg.Sources.NomadEvents; len(es) != 1 || es[0].Address != sock || es[0].Token.Reveal() != wi || es[0].Namespace != "*" {
		t.Errorf("nomad_events %+v", ecfg.Sources.NomadEvents)
	}
	if ecfg.Node != "client-7" {
		t.Errorf("events node %q, want the Nomad node name (the identity's policy has no agent read)", ecfg.Node)
	}
}

// TestNomadJobsValidate: the real nomad CLI (2.0.5) validates both jobs
// (offline: it cannot reach an agent, so the drivers' configs are not
// checked).
func TestNomadJobsValidate(t *testing.T) {
	bin := externaltest.NomadBinary(t)
	for _, f := range []string{"klaxon-ingest.nomad.hcl", "klaxon-correlate.nomad.hcl"} {
		cmd := exec.Command(bin, "job", "validate", filepath.Join(deployDir, "nomad", f))
		cmd.Env = append(os.Environ(), "NOMAD_ADDR=http://127.0.0.1:1", "NOMAD_TOKEN=")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Job validation successful") {
			t.Errorf("nomad job validate %s: %v\n%s", f, err, out)
		}
	}
}

// stubFiles copies a YAML config, replacing every nats *_file path by an
// existing empty file, so that an example naming /etc/klaxon/… loads here.
func stubFiles(t *testing.T, src string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	dir := t.TempDir()
	var stub func(m map[string]any)
	stub = func(m map[string]any) {
		for k, v := range m {
			switch v := v.(type) {
			case map[string]any:
				stub(v)
			case string:
				if strings.HasSuffix(k, "_file") && v != "" {
					p := filepath.Join(dir, k)
					if err := os.WriteFile(p, nil, 0o600); err != nil {
						t.Fatal(err)
					}
					m[k] = p
				}
			}
		}
	}
	if nats, ok := doc["nats"].(map[string]any); ok {
		stub(nats)
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, filepath.Base(src))
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDeployConfigs: every example configuration loads with the config
// loader and has what its role needs.
func TestDeployConfigs(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(deployDir, "config/*.yaml"))
	if len(files) < 4 {
		t.Fatalf("example configs: %q", files)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, _ := os.ReadFile(f)
			// The file as written must load (unknown keys are errors with
			// their line); external paths are stubbed only for the checks.
			cfg, err := LoadConfig(stubFiles(t, f))
			if err != nil {
				t.Fatal(err)
			}
			role := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "klaxon-"), ".yaml")
			switch role {
			case "allinone":
				if cfg.NATS.URL != "" || len(cfg.Sources.NomadLog) == 0 || len(cfg.Sinks) == 0 {
					t.Errorf("all-in-one: url %q, %d log sources, %d sinks", cfg.NATS.URL, len(cfg.Sources.NomadLog), len(cfg.Sinks))
				}
			case "ingest", "ingest-windows":
				if cfg.NATS.URL == "" || len(cfg.Sources.NomadLog) == 0 || cfg.NATS.Replicas != 3 {
					t.Errorf("ingest: url %q, %d log sources, replicas %d", cfg.NATS.URL, len(cfg.Sources.NomadLog), cfg.NATS.Replicas)
				}
				if !strings.Contains(string(raw), "# role: ingest") {
					t.Error("no role comment")
				}
				if role == "ingest-windows" && (cfg.Sources.WinEvt == nil || len(cfg.Sources.WinEvt.Channels) == 0) {
					t.Error("Windows ingest without the Event Log")
				}
			case "correlate":
				if cfg.NATS.URL == "" || cfg.NATS.Replicas != 3 || len(cfg.Sources.NomadLog) != 0 || cfg.Correlator.Partitions < 2 {
					t.Errorf("correlate: url %q, replicas %d, %d log sources, %d partitions", cfg.NATS.URL, cfg.NATS.Replicas, len(cfg.Sources.NomadLog), cfg.Correlator.Partitions)
				}
				if !strings.Contains(string(raw), "# role: correlate") {
					t.Error("no role comment")
				}
			default:
				t.Errorf("unexpected example %s", f)
			}
			if !httpapi.IsLoopbackListen(cfg.HTTP.Listen) {
				t.Errorf("http.listen %q: examples bind loopback", cfg.HTTP.Listen)
			}
		})
	}
}

// TestSystemdUnit: systemd-analyze accepts the unit, and its exposure
// score stays low.
func TestSystemdUnit(t *testing.T) {
	const analyze = "/usr/bin/systemd-analyze"
	externaltest.Need(t, analyze, "systemd")
	b, err := os.ReadFile(filepath.Join(deployDir, "systemd/klaxon.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{"ExecStart=/usr/local/bin/klaxon ${KLAXON_ROLE} --config ${KLAXON_CONFIG}", "NoNewPrivileges=yes", "ProtectSystem=strict", "DynamicUser=yes", "Restart=on-failure"} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	// verify wants the executable to exist.
	unit = strings.ReplaceAll(unit, "/usr/local/bin/klaxon", "/bin/true")
	p := filepath.Join(t.TempDir(), "klaxon.service")
	if err := os.WriteFile(p, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", p).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.Command(analyze, "security", "--offline=yes", "--no-pager", p).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for klaxon\.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level:\n%s", out)
	}
	if score, _ := strconv.ParseFloat(string(m[1]), 64); score > 2.5 {
		t.Errorf("exposure %v, want at most 2.5 (\"OK\")\n%s", score, out)
	}
}

// klaxonMetrics returns the metric names klaxon's registry describes, and
// which are histograms.
func klaxonMetrics(t *testing.T) (names map[string]bool, histograms map[string]bool) {
	t.Helper()
	m := newMetrics()
	ch := make(chan *prometheus.Desc, 256)
	go func() { m.reg.Describe(ch); close(ch) }()
	names, histograms = map[string]bool{}, map[string]bool{}
	re := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		if sm := re.FindStringSubmatch(d.String()); sm != nil {
			names[sm[1]] = true
		}
	}
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetType().String() == "HISTOGRAM" {
			histograms[mf.GetName()] = true
		}
	}
	histograms["klaxon_correlator_event_duration_seconds"] = true
	if !names["klaxon_sink_dlq_messages"] || !names["go_goroutines"] {
		t.Fatalf("descriptors not read: %v", names)
	}
	return names, histograms
}

// metricNames returns the metric names a PromQL expression uses.
func metricNames(expr string) []string {
	// Label values and matchers ("…") and by/without/on lists are not names.
	expr = regexp.MustCompile(`"[^"]*"`).ReplaceAllString(expr, `""`)
	expr = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`).ReplaceAllString(expr, "")
	var out []string
	for _, m := range regexp.MustCompile(`\b(klaxon_[a-z_]+|process_[a-z_]+|go_[a-z_]+|up)\b`).FindAllString(expr, -1) {
		out = append(out, m)
	}
	return out
}

// checkNames fails for names klaxon does not expose.
func checkNames(t *testing.T, where, expr string, names, histograms map[string]bool) []string {
	t.Helper()
	var used []string
	for _, n := range metricNames(expr) {
		base := n
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if h, ok := strings.CutSuffix(n, suf); ok && histograms[h] {
				base = h
			}
		}
		if !names[base] && base != "up" {
			t.Errorf("%s: %q is not a metric klaxon exposes (expression %s)", where, n, expr)
		}
		used = append(used, base)
	}
	return used
}

// promtoolCheckRules runs `promtool check rules` on a rules file.
func promtoolCheckRules(t *testing.T, path string) {
	t.Helper()
	out, err := exec.Command(promtoolBinary, "check", "rules", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool check rules %s: %v\n%s", path, err, out)
	}
}

// TestPrometheusAlerts: the alerting rules pass promtool's check and unit
// tests, use only metrics klaxon exposes, and cover what issue 7 names.
func TestPrometheusAlerts(t *testing.T) {
	externaltest.Need(t, promtoolBinary, "prometheus")
	rules := filepath.Join(deployDir, "prometheus/klaxon-alerts.yml")
	promtoolCheckRules(t, rules)
	out, err := exec.Command(promtoolBinary, "test", "rules", filepath.Join(deployDir, "prometheus/klaxon-alerts_test.yml")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	var doc struct {
		Groups []struct {
			Rules []struct {
				Alert  string            `yaml:"alert"`
				Expr   string            `yaml:"expr"`
				Labels map[string]string `yaml:"labels"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	b, _ := os.ReadFile(rules)
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	names, hists := klaxonMetrics(t)
	used := map[string]bool{}
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			if r.Labels["severity"] == "" {
				t.Errorf("%s: no severity", r.Alert)
			}
			for _, n := range checkNames(t, r.Alert, r.Expr, names, hists) {
				used[n] = true
			}
		}
	}
	for _, want := range []string{"klaxon_source_lag_seconds", "klaxon_source_parse_errors_total", "klaxon_sink_dlq_messages",
		"klaxon_nats_connected", "klaxon_sink_failures_total", "klaxon_source_checkpoint_age_seconds",
		"klaxon_state_checkpoint_last_success_timestamp_seconds"} {
		if !used[want] {
			t.Errorf("no alert on %s", want)
		}
	}
}

// TestGrafanaDashboard: the dashboard is valid JSON, every query is valid
// PromQL (checked by promtool as recording rules, Grafana's variables
// replaced) on metrics klaxon exposes, and every klaxon metric is shown.
func TestGrafanaDashboard(t *testing.T) {
	externaltest.Need(t, promtoolBinary, "prometheus")
	b, err := os.ReadFile(filepath.Join(deployDir, "grafana/klaxon.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Title  string `json:"title"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr  string `json:"expr"`
				RefID string `json:"refId"`
			} `json:"targets"`
			GridPos struct{ H, W, X, Y int } `json:"gridPos"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Error("dashboard without uid or title")
	}
	names, hists := klaxonMetrics(t)
	used := map[string]bool{}
	ids := map[int]bool{}
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	vars := strings.NewReplacer("$__rate_interval", "5m", "$job", ".*", "$instance", ".*")
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: grid %+v", p.Title, p.GridPos)
		}
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			for _, n := range checkNames(t, p.Title, q.Expr, names, hists) {
				used[n] = true
			}
			if strings.Contains(vars.Replace(q.Expr), "$") {
				t.Errorf("panel %q: unknown variable in %s", p.Title, q.Expr)
			}
			expr, _ := json.Marshal(vars.Replace(q.Expr)) // a JSON string is a YAML string
			fmt.Fprintf(&rules, "      - record: dashboard:panel%d:%s\n        expr: %s\n", p.ID, q.RefID, expr)
		}
	}
	p := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(p, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	promtoolCheckRules(t, p)
	var missing []string
	for n := range names {
		if strings.HasPrefix(n, "klaxon_") && !used[n] && n != "klaxon_source_last_event_timestamp_seconds" {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("metrics not on the dashboard: %v", missing)
	}
}

// TestREADMEListsMetrics: the README's metric list names every klaxon metric.
func TestREADMEListsMetrics(t *testing.T) {
	b, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	names, _ := klaxonMetrics(t)
	for n := range names {
		if strings.HasPrefix(n, "klaxon_") && !strings.Contains(string(b), "`"+n+"`") {
			t.Errorf("README does not list `%s`", n)
		}
	}
}

// checkArtifact: the task downloads an archive `make dist` builds
// (klaxon_<os>_<arch>.zip of DIST_TARGETS) into the directory its command
// runs from.
func checkArtifact(t *testing.T, task hclBlock) {
	t.Helper()
	cmd := task.block("config").str("command")
	goos := "linux"
	if strings.HasSuffix(cmd, ".exe") {
		goos = "windows"
	}
	art := task.block("artifact")
	src := art.str("source")
	if want := "/klaxon_" + goos + "_${attr.cpu.arch}.zip"; !strings.HasSuffix(strings.Trim(src, `"`), want) {
		t.Errorf("%s: artifact %s, want …%s", task.name, src, want)
	}
	if dest := art.str("destination"); dest != path.Dir(cmd) {
		t.Errorf("%s: artifact unpacked to %q, command %q", task.name, dest, cmd)
	}
	mk, err := os.ReadFile("../../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	var targets string
	for _, line := range strings.Split(string(mk), "\n") {
		if v, ok := strings.CutPrefix(line, "DIST_TARGETS :="); ok {
			targets = v
		}
	}
	if !slices.Contains(strings.Fields(targets), goos+"/amd64") {
		t.Errorf("%s: make dist builds %q, not %s/amd64", task.name, targets, goos)
	}
}
