package testkit

// NomadLineShapes are the line shapes of a real Nomad 2.0.5 client/server log at
// DEBUG (crashloop-gc-checkrestart/nomad.log), with the variable parts as
// verbs: %s time, %[2]s an alloc id, %[3]d a number. Weighted by repetition.
// The replay and live benchmarks generate their load from them.
var NomadLineShapes = []string{
	`%s [DEBUG] client: updated allocations: index=%[3]d total=14 pulled=0 filtered=14`,
	`%s [DEBUG] client: allocation updates: added=0 removed=0 updated=1 ignored=13`,
	`%s [DEBUG] client: allocation updates applied: added=0 removed=0 updated=1 ignored=13 errors=0`,
	`%s [DEBUG] http: request complete: method=GET path=/v1/agent/self duration="%[3]dµs"`,
	`%s [DEBUG] worker: dequeued evaluation: worker_id=f48f7fa8-d28b-7ab8-16d5-e45dfe163c30 eval_id=%[2]s type=service namespace=default job_id=crashloop node_id="" triggered_by=alloc-failure`,
	`%s [DEBUG] worker.service_sched: setting eval status: eval_id=%[2]s job_id=crashloop namespace=default worker_id=f48f7fa8-d28b-7ab8-16d5-e45dfe163c30 status=complete`,
	`%s [DEBUG] client.driver_mgr.raw_exec.executor: plugin started: alloc_id=%[2]s driver=raw_exec task_name=app path=/opt/nomad/bin/nomad pid=%[3]d`,
	`%s [DEBUG] client.driver_mgr.raw_exec.executor: using plugin: alloc_id=%[2]s driver=raw_exec task_name=app version=2`,
	`%s [INFO]  client.driver_mgr.raw_exec.executor: plugin process exited: alloc_id=%[2]s driver=raw_exec task_name=app plugin=/opt/nomad/bin/nomad id=%[3]d`,
	`%s [INFO]  client.alloc_runner.task_runner: Task event: alloc_id=%[2]s task=app type=Started msg="Task started by client" failed=false`,
	`%s [INFO]  client.alloc_runner.task_runner: Task event: alloc_id=%[2]s task=app type=Terminated msg="Exit Code: 1" failed=false`,
	`%s [INFO]  client.alloc_runner.task_runner: restarting task: alloc_id=%[2]s task=app reason="Restart within policy" delay=2.264051308s`,
	`%s [INFO]  client.alloc_runner.task_runner: Task event: alloc_id=%[2]s task=app type=Restarting msg="Task restarting in 2.264051308s" failed=false`,
	`%s [INFO]  client.alloc_runner.task_runner: not restarting task: alloc_id=%[2]s task=app reason="Exceeded allowed attempts 2 in interval 1m0s and mode is \"fail\""`,
	`%s [DEBUG] watch.checks: check became unhealthy. Will restart if check doesn't become healthy: alloc_id=%[2]s check="service: \"unhealthy\" check" task=srv time_limit=3s`,
	`%s [INFO]  client.alloc_runner.task_runner: Task event: alloc_id=%[2]s task=srv type="Restart Signaled" msg="healthcheck: check \"service: \\"unhealthy\\" check\" unhealthy" failed=false`,
	`%s [WARN]  client.gc: garbage collection skipped because no terminal allocations: reason="number of allocations (%[3]d) is over the limit (6)"`,
	`%s [INFO]  client.gc: garbage collecting allocation: alloc_id=%[2]s reason="number of allocations (%[3]d) is over the limit (6)"`,
	`%s [DEBUG] client.gc: alloc garbage collected: alloc_id=%[2]s`,
	`%s [INFO]  client.gc: marking allocation for GC: alloc_id=%[2]s`,
	`%s [DEBUG] nomad.deployments_watcher: deadline hit: deployment_id=%[2]s job="<ns: \"default\", id: \"crashloop\">" rollback=false`,
	`%s [DEBUG] client.alloc_runner.runner_hook.group_services: delay before killing tasks: alloc_id=%[2]s group=web shutdown_delay=0s`,
	`%s [WARN]  client.fingerprint_mgr.consul: failed to acquire consul self endpoint: cluster=default error="Get \"http://localhost:8500/v1/agent/self\": dial tcp 127.0.0.1:8500: connect: connection refused"`,
	`{"@level":"debug","@message":"updated allocations","@module":"client","@timestamp":"%s","filtered":76,"index":%[3]d,"pulled":0,"total":76}`,
}
