# ACL policy of the klaxon-correlate job's workload identity (ACLs
# enabled): its group "events" reads the cluster's event stream. The topics
# Allocation, Evaluation, Deployment and Job need read-job in the
# namespaces streamed ("*": all); the topic Node needs node read.
#
#   nomad acl policy apply -namespace default -job klaxon-correlate -group events \
#     -description "klaxon: read the event stream" klaxon-events klaxon-events.policy.hcl

namespace "*" {
  capabilities = ["read-job"]
}

node {
  policy = "read"
}
