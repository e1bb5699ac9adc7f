package nomadevents

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/klaxon-dev/klaxon/ingest"
)

// fields collects string fields, leaving out empty values.
type fields map[string]any

func (f fields) set(k, v string) {
	if v != "" {
		f[k] = v
	}
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

func (d *Decoder) eventTime(ns int64) time.Time {
	if ns > 0 {
		return time.Unix(0, ns).UTC()
	}
	if d.clock > 0 {
		return time.Unix(0, d.clock).UTC()
	}
	return d.now().UTC()
}

// nodeName returns the canonical name of a node ID ("" when unknown).
func (d *Decoder) nodeName(id string) string {
	if n, ok := d.id.NameOf(id); ok {
		return n
	}
	if n := d.nodes[id]; n != nil && n.Name != "" {
		return n.Name
	}
	return ""
}

// member is where one member of a JSON object goes: dst is a *string,
// an *int64 or a *bool.
type member struct {
	key string
	dst any
}

// setMember decodes v into the member of ms named k; false when none is.
// An error names the member.
func setMember(ms []member, k, v []byte) (bool, error) {
	for _, m := range ms {
		if m.key != string(k) {
			continue
		}
		var err error
		switch dst := m.dst.(type) {
		case *string:
			*dst, err = str(v)
		case *int64:
			*dst, err = num(v)
		case *bool:
			*dst, err = boolean(v)
		}
		if err != nil {
			return true, fmt.Errorf("%s: %w", k, err)
		}
		return true, nil
	}
	return false, nil
}

// decodeMembers reads the members of the object b named in ms; the others
// go to rest when it is not nil. An error names the member.
func decodeMembers(b []byte, ms []member, rest func(k, v []byte) error) error {
	return eachMember(b, func(k, v []byte) (bool, error) {
		ok, err := setMember(ms, k, v)
		if !ok && rest != nil {
			if err = rest(k, v); err != nil {
				err = fmt.Errorf("%s: %w", k, err)
			}
		}
		return false, err
	})
}

// --- Node ---

type nodePayload struct {
	ID, Name, Status, StatusDescription, Datacenter, NodePool, NodeClass string
	Eligibility, Hostname, Kernel                                        string
	Drain                                                                bool
	StatusUpdatedAt                                                      int64
	LastEvent                                                            string
	LastEventTime                                                        time.Time
}

func decodeNode(b []byte) (*nodePayload, error) {
	p := &nodePayload{}
	ms := []member{
		{"ID", &p.ID}, {"Name", &p.Name}, {"Status", &p.Status}, {"StatusDescription", &p.StatusDescription},
		{"Datacenter", &p.Datacenter}, {"NodePool", &p.NodePool}, {"NodeClass", &p.NodeClass},
		{"SchedulingEligibility", &p.Eligibility}, {"StatusUpdatedAt", &p.StatusUpdatedAt},
	}
	err := decodeMembers(b, ms, func(k, v []byte) error {
		var err error
		switch string(k) {
		case "Drain":
			var dr bool
			dr, err = boolean(v)
			p.Drain = p.Drain || dr
		case "DrainStrategy":
			if len(v) > 0 && v[0] == '{' {
				p.Drain = true
			}
		case "Attributes":
			err = eachMember(v, func(ak, av []byte) (bool, error) {
				var e error
				switch string(ak) {
				case "kernel.name":
					p.Kernel, e = str(av)
				case "unique.hostname":
					p.Hostname, e = str(av)
				}
				return p.Hostname != "" && p.Kernel != "", e
			})
		case "Events":
			err = eachElement(v, func(ev []byte) error {
				var msg, ts string
				err := eachMember(ev, func(ek, evv []byte) (bool, error) {
					var e error
					switch string(ek) {
					case "Message":
						msg, e = str(evv)
					case "Timestamp":
						ts, e = str(evv)
					}
					return false, e
				})
				if err != nil {
					return err
				}
				t, _ := time.Parse(time.RFC3339Nano, ts)
				if p.LastEvent == "" || !t.Before(p.LastEventTime) {
					p.LastEvent, p.LastEventTime = msg, t
				}
				return nil
			})
		}
		return err
	})
	return p, err
}

func (d *Decoder) node(c change, b []byte, emit func(ingest.Event)) error {
	p, err := decodeNode(b)
	if err != nil {
		return err
	}
	id := c.objectID(p.ID)
	d.id.Learn(id, p.Name, p.Hostname)
	name := d.nodeName(id)
	if name == "" {
		name = d.id.Resolve(p.Name)
	}
	t := time.Unix(p.StatusUpdatedAt, 0)
	if p.StatusUpdatedAt == 0 || p.LastEventTime.After(t) {
		t = p.LastEventTime
	}
	var ns int64
	if !t.IsZero() && t.Unix() > 0 {
		ns = t.UnixNano()
	}

	st := d.nodes[id]
	known := st != nil && st.Status != ""
	if st == nil {
		st = &nodeState{}
		d.nodes[id] = st
	}
	// A change that is not a status change (an allocation update, a drain,
	// eligibility) happened now, not when the status last changed: it takes
	// the stream's clock when that is newer.
	if known && st.Status == p.Status && d.clock > ns {
		ns = d.clock
	}
	d.tick(ns)
	f := fields{}
	f.set("status", p.Status)
	if known {
		f.set("prev_status", st.Status)
	}
	f.set("status_description", p.StatusDescription)
	f.set("datacenter", p.Datacenter)
	f.set("node_pool", p.NodePool)
	f.set("node_class", p.NodeClass)
	f.set("drain", strconv.FormatBool(p.Drain))
	f.set("eligibility", p.Eligibility)
	f.set("last_event", p.LastEvent)
	f.set("unique_hostname", p.Hostname)
	f.set("kernel", p.Kernel)
	// A node found to run Windows: its running count so far.
	learned := p.Kernel != "" && st.Kernel != p.Kernel
	if p.Kernel != "" {
		st.Kernel = p.Kernel
	}

	switch p.Status {
	case "disconnected":
		st.Reconnecting = true
	case "ready", "down":
		st.Reconnecting = false
	}
	level := ingest.LevelInfo
	switch {
	case p.Status == "down":
		level = ingest.LevelError
	case p.Status == "disconnected", p.Status == "initializing" && st.Reconnecting:
		level = ingest.LevelWarn
	}
	msg := p.LastEvent
	if !known || st.Status != p.Status || msg == "" {
		msg = "node " + name + " is " + p.Status
		if known && st.Status != p.Status {
			msg += " (was " + st.Status + ")"
		}
	}
	if p.Status != "" {
		st.Status = p.Status
	}
	if name != "" {
		st.Name = name
	}
	d.st.changes.Add(1)
	emit(ingest.Event{
		ID: c.id(), Time: d.eventTime(ns), Node: name, NodeID: id,
		Source: ingest.SourceNomadEvent, Kind: c.kind, Level: level, Msg: msg, Fields: f,
	})
	if learned && d.windows(id) && d.running[id] > 0 {
		emit(d.runningEvent(c.id(), id, -1, d.eventTime(ns), nil))
	}
	return nil
}

// --- Allocation ---

type allocPayload struct {
	ID, JobID, Namespace, TaskGroup, ClientStatus, DesiredStatus string
	DesiredDescription, ClientDescription, PreviousAllocation    string
	DeploymentID, NodeID, NodeName, PrevNodeID                   string
	ModifyTime, ModifyIndex                                      int64
	Tasks                                                        []taskEvents
}

type taskEvents struct {
	name   string
	events []taskEvent
}

func decodeAlloc(b []byte) (*allocPayload, error) {
	p := &allocPayload{}
	ms := []member{
		{"ID", &p.ID}, {"JobID", &p.JobID}, {"Namespace", &p.Namespace}, {"TaskGroup", &p.TaskGroup},
		{"ClientStatus", &p.ClientStatus}, {"DesiredStatus", &p.DesiredStatus}, {"DesiredDescription", &p.DesiredDescription},
		{"ClientDescription", &p.ClientDescription}, {"PreviousAllocation", &p.PreviousAllocation},
		{"DeploymentID", &p.DeploymentID}, {"NodeID", &p.NodeID}, {"NodeName", &p.NodeName},
		{"ModifyTime", &p.ModifyTime}, {"ModifyIndex", &p.ModifyIndex},
	}
	member := func(k, v []byte) error {
		if ok, err := setMember(ms, k, v); ok {
			return err
		}
		if string(k) == "RescheduleTracker" {
			err := eachMember(v, func(rk, rv []byte) (bool, error) {
				if string(rk) != "Events" {
					return false, nil
				}
				return true, eachElement(rv, func(ev []byte) error {
					prev := ""
					err := eachMember(ev, func(ek, evv []byte) (bool, error) {
						if string(ek) == "PrevNodeID" {
							var e error
							prev, e = str(evv)
							return true, e
						}
						return false, nil
					})
					p.PrevNodeID = prev // the last entry wins
					return err
				})
			})
			if err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
		}
		return nil
	}
	// The task states are walked where they stand, not cut out first:
	// they are most of an allocation, and every cut is one more pass.
	_, err := walkMembers(b, 0, func(k []byte, v int) (int, error) {
		if string(k) == "TaskStates" {
			return p.decodeTaskStates(b, v)
		}
		end, err := skipValue(b, v)
		if err != nil {
			return 0, err
		}
		return end, member(k, b[v:end])
	})
	sort.Slice(p.Tasks, func(i, j int) bool { return p.Tasks[i].name < p.Tasks[j].name })
	return p, err
}

// decodeTaskStates decodes the events of every task of the TaskStates
// object at b[i:] and returns the offset after it. A bad task event fails
// the whole allocation change.
func (p *allocPayload) decodeTaskStates(b []byte, i int) (int, error) {
	end, err := walkMembers(b, i, func(task []byte, ti int) (int, error) {
		name, err := str(append(append([]byte{'"'}, task...), '"'))
		if err != nil {
			return 0, fmt.Errorf("TaskStates: %w", err)
		}
		return walkMembers(b, ti, func(sk []byte, si int) (int, error) {
			if string(sk) != "Events" {
				return skipValue(b, si)
			}
			t := taskEvents{name: name}
			end, err := walkElements(b, si, func(ei int) (int, error) {
				te, end, err := decodeTaskEvent(b, ei)
				if err == nil {
					t.events = append(t.events, te)
				}
				return end, err
			})
			if err != nil {
				return 0, fmt.Errorf("TaskStates[%s].Events: %w", name, err)
			}
			p.Tasks = append(p.Tasks, t)
			return end, nil
		})
	})
	return end, err
}

func (d *Decoder) alloc(c change, b []byte, emit func(ingest.Event)) error {
	p, err := decodeAlloc(b)
	if err != nil {
		return err
	}
	// Task events are decoded (decodeAlloc) before anything is emitted so
	// that a bad one skips the whole change.
	id := c.objectID(p.ID)
	node := d.nodeName(p.NodeID)
	if node == "" {
		node = d.id.Resolve(p.NodeName)
	}
	d.tick(p.ModifyTime)
	st := d.allocs[id]
	f := d.allocFields(id, p, st)
	msg := "allocation " + short(id) + " of job " + p.JobID + " is " + p.ClientStatus
	if p.DesiredDescription != "" {
		msg += ", desired " + p.DesiredStatus + ": " + p.DesiredDescription
	}
	level := ingest.LevelInfo
	switch p.ClientStatus {
	case "failed", "lost", "unknown":
		level = ingest.LevelWarn
	}
	d.st.changes.Add(1)
	at := d.changeTime(c, p.ModifyTime)
	emit(ingest.Event{
		ID: c.id(), Time: d.eventTime(at), Node: node, NodeID: p.NodeID,
		Source: ingest.SourceNomadEvent, Kind: c.kind, Level: level, Msg: msg, Fields: f,
	})
	if st == nil {
		st = &allocState{}
		d.allocs[id] = st
	}
	d.updateAlloc(c, p, st, d.eventTime(at), f, emit)
	d.emitTaskEvents(id, p, st, node, emit)
	d.changes++
	if d.changes >= sweepEvery {
		d.changes = 0
		d.sweep()
	}
	return nil
}

// allocFields are the fields of an allocation change; st is the
// allocation's state before it (nil: first seen).
func (d *Decoder) allocFields(id string, p *allocPayload, st *allocState) fields {
	f := fields{}
	f.set("alloc_id", id)
	f.set("job", p.JobID)
	f.set("namespace", p.Namespace)
	f.set("task_group", p.TaskGroup)
	f.set("client_status", p.ClientStatus)
	if st != nil {
		f.set("prev_client_status", st.Client)
	}
	f.set("desired_status", p.DesiredStatus)
	f.set("desired_description", p.DesiredDescription)
	f.set("client_description", p.ClientDescription)
	f.set("previous_alloc", p.PreviousAllocation)
	f.set("deployment_id", p.DeploymentID)
	prevNode := p.PrevNodeID
	if prevNode == "" && p.PreviousAllocation != "" {
		if pa := d.allocs[p.PreviousAllocation]; pa != nil {
			prevNode = pa.NodeID
		}
	}
	f.set("prev_node_id", prevNode)
	if prevNode != "" {
		f.set("prev_node", d.nodeName(prevNode))
	}
	return f
}

// updateAlloc moves the allocation's state to change p and tells the
// Windows nodes whose running count it changed. An older copy of the
// allocation (frames out of order) does not move its state back.
func (d *Decoder) updateAlloc(c change, p *allocPayload, st *allocState, at time.Time, f fields, emit func(ingest.Event)) {
	if p.ModifyIndex < st.Modify {
		return
	}
	id := c.objectID(p.ID)
	d.dropLost(id, st)
	oldNode, before := st.NodeID, d.running[p.NodeID]
	oldBefore := d.running[oldNode]
	d.countRunning(st, -1)
	st.NodeID, st.Job, st.Namespace = p.NodeID, p.JobID, p.Namespace
	st.Client, st.Desired = p.ClientStatus, p.DesiredStatus
	st.Modify, st.Time = p.ModifyIndex, p.ModifyTime
	d.setLost(id, st)
	d.countRunning(st, 1)
	if oldNode != "" && oldNode != p.NodeID && d.running[oldNode] != oldBefore && d.windows(oldNode) {
		// An allocation stays on its node in Nomad; should one move,
		// the node it left is told too.
		emit(d.runningEvent(c.id(), oldNode, oldBefore, at, f))
	}
	if d.running[p.NodeID] != before && d.windows(p.NodeID) {
		emit(d.runningEvent(c.id(), p.NodeID, before, at, f))
	}
}

// emitTaskEvents emits the task events of the allocation not seen before.
func (d *Decoder) emitTaskEvents(id string, p *allocPayload, st *allocState, node string, emit func(ingest.Event)) {
	for _, t := range p.Tasks {
		for _, ev := range t.events {
			ts := st.Tasks[t.name]
			if ts == nil {
				if st.Tasks == nil {
					st.Tasks = map[string]*taskState{}
				}
				ts = &taskState{}
				st.Tasks[t.name] = ts
			}
			fp := fprint{T: ev.Time, Type: ev.Type}
			if ts.has(fp) {
				continue
			}
			n := ts.N
			ts.add(fp)
			d.tick(ev.Time)
			d.st.taskEvents.Add(1)
			emit(d.taskEvent(id, p, node, t.name, n, ev))
		}
	}
}

// changeTime is when a change whose object was modified at modified (Unix
// ns) happened. A plan's allocation updates keep the ModifyTime of the
// allocation as the scheduler read it (seconds old when the plan is
// applied); it happens now: the newest time the stream told.
func (d *Decoder) changeTime(c change, modified int64) int64 {
	if c.typ == "PlanResult" {
		return d.clock
	}
	return modified
}

type taskEvent struct {
	Type, DisplayMessage, Message, RestartReason, KillReason, DriverError string
	Time, ExitCode, Signal                                                int64
	FailsTask, OOM                                                        bool
}

// decodeTaskEvent decodes the task event at b[i:] and returns the offset
// after it.
func decodeTaskEvent(b []byte, i int) (taskEvent, int, error) {
	var e taskEvent
	ms := []member{
		{"Type", &e.Type}, {"Time", &e.Time}, {"DisplayMessage", &e.DisplayMessage}, {"Message", &e.Message},
		{"RestartReason", &e.RestartReason}, {"KillReason", &e.KillReason}, {"DriverError", &e.DriverError},
		{"ExitCode", &e.ExitCode}, {"Signal", &e.Signal}, {"FailsTask", &e.FailsTask},
	}
	end, err := walkMembers(b, i, func(k []byte, vi int) (int, error) {
		if string(k) == "Details" {
			return walkMembers(b, vi, func(dk []byte, di int) (int, error) {
				end, err := skipValue(b, di)
				if err == nil && string(dk) == "oom_killed" {
					var s string
					s, err = str(b[di:end])
					e.OOM = s == "true"
				}
				if err != nil {
					return 0, fmt.Errorf("Details: %w", err)
				}
				return end, nil
			})
		}
		end, err := skipValue(b, vi)
		if err != nil {
			return 0, err
		}
		if _, err := setMember(ms, k, b[vi:end]); err != nil {
			return 0, err
		}
		return end, nil
	})
	return e, end, err
}

func (d *Decoder) taskEvent(allocID string, p *allocPayload, node, task string, n int, e taskEvent) ingest.Event {
	f := fields{}
	f.set("alloc_id", allocID)
	f.set("namespace", p.Namespace)
	f.set("job", p.JobID)
	f.set("task_group", p.TaskGroup)
	f.set("task", task)
	f.set("type", e.Type)
	msg := e.DisplayMessage
	if msg == "" {
		msg = e.Message
	}
	f.set("msg", msg)
	f.set("failed", strconv.FormatBool(e.FailsTask))
	if e.Type == "Terminated" || e.ExitCode != 0 {
		f.set("exit_code", strconv.FormatInt(e.ExitCode, 10))
	}
	if e.Signal != 0 {
		f.set("signal", strconv.FormatInt(e.Signal, 10))
	}
	if e.OOM {
		f.set("oom_killed", "true")
	}
	f.set("restart_reason", e.RestartReason)
	f.set("kill_reason", e.KillReason)
	f.set("driver_error", e.DriverError)
	level := ingest.LevelInfo
	switch {
	case e.FailsTask:
		level = ingest.LevelError
	case e.Type == "Terminated" && (e.ExitCode != 0 || e.OOM),
		e.Type == "Restarting", e.Type == "Restart Signaled", e.Type == "Killed",
		e.Type == "Driver Failure", e.Type == "Task hook failed":
		level = ingest.LevelWarn
	}
	return ingest.Event{
		ID:     "nomadev:task:" + allocID + ":" + task + ":" + strconv.Itoa(n),
		Time:   d.eventTime(e.Time),
		Node:   node,
		NodeID: p.NodeID,
		Source: ingest.SourceNomadEvent,
		Kind:   "Allocation.TaskEvent",
		Level:  level,
		Msg:    "Task event",
		Fields: f,

		Occurrence: ingest.TaskOccurrence(allocID, task, e.Type),
	}
}

// --- Evaluation ---

type evalPayload struct {
	ID, JobID, Namespace, Status, TriggeredBy, StatusDescription, BlockedEval, NodeID string
	FailedTGs                                                                         []string
	Queued                                                                            int64
	HasQueued                                                                         bool
	ModifyTime                                                                        int64
}

func decodeEval(b []byte) (*evalPayload, error) {
	p := &evalPayload{}
	ms := []member{
		{"ID", &p.ID}, {"JobID", &p.JobID}, {"Namespace", &p.Namespace}, {"Status", &p.Status},
		{"TriggeredBy", &p.TriggeredBy}, {"StatusDescription", &p.StatusDescription}, {"BlockedEval", &p.BlockedEval},
		{"NodeID", &p.NodeID}, {"ModifyTime", &p.ModifyTime},
	}
	err := decodeMembers(b, ms, func(k, v []byte) error {
		var err error
		switch string(k) {
		case "FailedTGAllocs":
			err = eachMember(v, func(tg, _ []byte) (bool, error) {
				name, err := str(append(append([]byte{'"'}, tg...), '"'))
				p.FailedTGs = append(p.FailedTGs, name)
				return false, err
			})
		case "QueuedAllocations":
			err = eachMember(v, func(_, qv []byte) (bool, error) {
				n, err := num(qv)
				p.Queued += n
				p.HasQueued = true
				return false, err
			})
		}
		return err
	})
	sort.Strings(p.FailedTGs)
	return p, err
}

func (d *Decoder) eval(c change, b []byte, emit func(ingest.Event)) error {
	p, err := decodeEval(b)
	if err != nil {
		return err
	}
	id := c.objectID(p.ID)
	d.tick(p.ModifyTime)
	st := d.evals[id]
	f := fields{}
	f.set("eval_id", id)
	f.set("job", p.JobID)
	f.set("namespace", p.Namespace)
	f.set("status", p.Status)
	if st != nil {
		f.set("prev_status", st.Status)
	}
	f.set("triggered_by", p.TriggeredBy)
	f.set("status_description", p.StatusDescription)
	f.set("blocked_eval", p.BlockedEval)
	f.set("failed_task_groups", strings.Join(p.FailedTGs, ","))
	if p.HasQueued {
		f.set("queued", strconv.FormatInt(p.Queued, 10))
	}
	if p.Status == "blocked" || len(p.FailedTGs) > 0 {
		var names []string
		for _, nodeID := range d.lost[jobKey(p.Namespace, p.JobID)] {
			n := d.nodeName(nodeID)
			if n == "" {
				n = nodeID
			}
			if n != "" && !contains(names, n) {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		f.set("replaces_node", strings.Join(names, ","))
	}
	var node string
	if p.NodeID != "" {
		node = d.nodeName(p.NodeID)
	}
	msg := "evaluation " + short(id) + " of job " + p.JobID + " is " + p.Status
	if p.StatusDescription != "" {
		msg += ": " + p.StatusDescription
	}
	level := ingest.LevelInfo
	if p.Status == "blocked" || p.Status == "failed" {
		level = ingest.LevelWarn
	}
	if st == nil {
		st = &statusState{}
		d.evals[id] = st
	}
	st.Status, st.Time = p.Status, max(p.ModifyTime, st.Time)
	d.st.changes.Add(1)
	at := d.changeTime(c, p.ModifyTime)
	emit(ingest.Event{
		ID: c.id(), Time: d.eventTime(at), Node: node, NodeID: p.NodeID,
		Source: ingest.SourceNomadEvent, Kind: c.kind, Level: level, Msg: msg, Fields: f,
	})
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// --- Deployment ---

func (d *Decoder) deployment(c change, b []byte, emit func(ingest.Event)) error {
	var id, job, ns, status, desc string
	var mt int64
	ms := []member{{"ID", &id}, {"JobID", &job}, {"Namespace", &ns}, {"Status", &status}, {"StatusDescription", &desc}, {"ModifyTime", &mt}}
	if err := decodeMembers(b, ms, nil); err != nil {
		return err
	}
	id = c.objectID(id)
	d.tick(mt)
	st := d.deploys[id]
	f := fields{}
	f.set("deployment_id", id)
	f.set("job", job)
	f.set("namespace", ns)
	f.set("status", status)
	if st != nil {
		f.set("prev_status", st.Status)
	} else {
		st = &statusState{}
		d.deploys[id] = st
	}
	f.set("status_description", desc)
	st.Status, st.Time = status, max(mt, st.Time)
	level := ingest.LevelInfo
	if status == "failed" {
		level = ingest.LevelWarn
	}
	d.st.changes.Add(1)
	emit(ingest.Event{
		ID: c.id(), Time: d.eventTime(mt), Source: ingest.SourceNomadEvent, Kind: c.kind,
		Level: level, Msg: "deployment of job " + job + " is " + status, Fields: f,
	})
	return nil
}

// --- Job ---

func (d *Decoder) job(c change, b []byte, emit func(ingest.Event)) error {
	var id, ns, typ, status string
	var version, submit int64
	var stop bool
	var meta map[string]any
	ms := []member{
		{"ID", &id}, {"Namespace", &ns}, {"Type", &typ}, {"Status", &status},
		{"Version", &version}, {"Stop", &stop}, {"SubmitTime", &submit},
	}
	err := decodeMembers(b, ms, func(k, v []byte) (err error) {
		if string(k) == "Meta" {
			meta, err = decodeMeta(v)
		}
		return err
	})
	if err != nil {
		return err
	}
	id = c.objectID(id)
	// SubmitTime is when the version was submitted; later changes of the
	// job (status) happen at the stream's current time.
	t := max(submit, d.clock)
	d.tick(submit)
	f := fields{}
	f.set("job", id)
	f.set("namespace", ns)
	f.set("type", typ)
	f.set("status", status)
	f.set("version", strconv.FormatInt(version, 10))
	f.set("stop", strconv.FormatBool(stop))
	if len(meta) > 0 {
		f[JobMetaField] = meta
	}
	msg := "job " + id + " is " + status
	if stop {
		msg += " (stopped)"
	}
	d.st.changes.Add(1)
	emit(ingest.Event{
		ID: c.id(), Time: d.eventTime(t), Source: ingest.SourceNomadEvent, Kind: c.kind,
		Level: ingest.LevelInfo, Msg: msg, Fields: f,
	})
	return nil
}

// JobMetaField is the field of a Job event holding the job's meta (a map
// of strings: owner, team, pager, …); ingest/nomadalloc gives it to the
// other events of the job, and the correlator makes it incident labels.
const JobMetaField = "job_meta"

// Bounds of a job's meta as events carry it: the first MaxJobMeta keys in
// the payload's order, values cut to MaxJobMetaValue bytes.
const (
	MaxJobMeta      = 64
	MaxJobMetaValue = 1024
)

// decodeMeta reads a job's Meta object (string values; null is none).
// Empty keys and values are left out.
func decodeMeta(b []byte) (map[string]any, error) {
	var meta map[string]any
	err := eachMember(b, func(k, v []byte) (bool, error) {
		key, err := str(append(append([]byte{'"'}, k...), '"'))
		if err != nil {
			return false, err
		}
		if len(v) == 0 || v[0] != '"' {
			return false, nil // null, or not a string: not meta Nomad writes
		}
		val, err := str(v)
		if err != nil {
			return false, fmt.Errorf("%s: %w", key, err)
		}
		if key == "" || val == "" {
			return false, nil
		}
		if len(val) > MaxJobMetaValue {
			val = strings.ToValidUTF8(val[:MaxJobMetaValue], "")
		}
		if meta == nil {
			meta = map[string]any{}
		}
		meta[key] = val
		return len(meta) >= MaxJobMeta, nil
	})
	return meta, err
}

// --- Service ---

func (d *Decoder) service(c change, b []byte, emit func(ingest.Event)) error {
	var name, alloc, job, addr, nodeID string
	var port int64
	ms := []member{{"ServiceName", &name}, {"AllocID", &alloc}, {"JobID", &job}, {"Address", &addr}, {"Port", &port}, {"NodeID", &nodeID}}
	if err := decodeMembers(b, ms, nil); err != nil {
		return err
	}
	f := fields{}
	f.set("service", name)
	f.set("alloc_id", alloc)
	f.set("job", job)
	f.set("address", addr)
	if port != 0 {
		f.set("port", strconv.FormatInt(port, 10))
	}
	verb := "registered"
	if c.typ == "ServiceDeregistration" {
		verb = "deregistered"
	}
	msg := "service " + name + " of job " + job + " " + verb
	if addr != "" {
		msg += " at " + addr
		if port != 0 {
			msg += ":" + strconv.FormatInt(port, 10)
		}
	}
	d.st.changes.Add(1)
	emit(ingest.Event{
		ID: c.id(), Time: d.eventTime(0), Node: d.nodeName(nodeID), NodeID: nodeID,
		Source: ingest.SourceNomadEvent, Kind: c.kind, Level: ingest.LevelInfo, Msg: msg, Fields: f,
	})
	return nil
}
