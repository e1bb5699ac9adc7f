# ACL policy of the klaxon-ingest job's workload identity (ACLs enabled).
# klaxon names the job of each allocation the agent's log lines name
# (GET /v1/allocation/<id>, the namespace's read-job capability), in every
# namespace:
#
#   nomad acl policy apply -namespace default -job klaxon-ingest \
#     -description "klaxon ingest: read allocations" klaxon-ingest klaxon-ingest.policy.hcl

namespace "*" {
  capabilities = ["read-job"]
}
