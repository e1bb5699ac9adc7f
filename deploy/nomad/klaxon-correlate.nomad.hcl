# klaxon correlate: the central correlators and sinks, as a service job.
#
# Two replicas on different hosts share the event partitions (one node's
# events, and so its windows, live in one correlator; a replica that dies
# hands its partitions to the other after correlator.lease_ttl). Each
# replica serves /metrics, /healthz, /readyz and the web view on its "http"
# port; Nomad checks /readyz.
#
# The group "events" reads the Nomad event stream of the cluster once, with
# `klaxon ingest` (the stream is cluster-wide, so it is not part of the
# per-client system job). A second copy would be harmless: every event has a
# stable id and JetStream drops the repeats.
#
# Needs: the exec driver on Linux clients, the klaxon archive (klaxon and
# rules.d/) at var.artifact_url, and a Nomad Variable at
# nomad/jobs/klaxon-correlate with nats_token, http_token and the sink
# secrets. The event stream is read with the task's workload identity
# through the task API socket (Nomad 1.10+), not with a static token; with
# ACLs enabled, attach the policy that lets it read the stream (namespace
# read-job and node read):
#
#   nomad acl policy apply -namespace default -job klaxon-correlate -group events klaxon-events klaxon-events.policy.hcl
#   nomad var put nomad/jobs/klaxon-correlate nats_token=... http_token=...
#   nomad job run -var nats_url=tls://nats-1:4222,tls://nats-2:4222 klaxon-correlate.nomad.hcl

variable "datacenters" {
  description = "Datacenters the correlators run in."
  type        = list(string)
  default     = ["*"]
}

variable "node_pool" {
  description = "Node pool of the central services."
  type        = string
  default     = "default"
}

variable "nats_url" {
  description = "NATS cluster (comma-separated URLs)."
  type        = string
  default     = "tls://nats.service.consul:4222"
}

variable "artifact_url" {
  description = "Base URL of the klaxon release archives (klaxon_<os>_<arch>.zip)."
  type        = string
  default     = "https://releases.example.com/klaxon/latest"
}

variable "replicas" {
  description = "Correlator replicas (at least 2 for failover)."
  type        = number
  default     = 2
}

variable "nomad_ui_url" {
  description = "The Nomad UI incidents link to (job, allocation, node), as on-call engineers reach it, e.g. https://nomad.example.com; empty: no links."
  type        = string
  default     = ""
}

job "klaxon-correlate" {
  type        = "service"
  datacenters = var.datacenters
  node_pool   = var.node_pool

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  update {
    max_parallel     = 1
    min_healthy_time = "15s"
    healthy_deadline = "3m"
    auto_revert      = true
  }

  group "correlate" {
    count = var.replicas

    # One replica per host: a host failure takes one replica at most.
    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }

    # A dynamic port on the host network; klaxon listens on it.
    network {
      port "http" {}
    }

    restart {
      attempts = 5
      interval = "10m"
      delay    = "10s"
      mode     = "delay"
    }

    reschedule {
      delay          = "30s"
      delay_function = "exponential"
      max_delay      = "10m"
      unlimited      = true
    }

    service {
      name     = "klaxon-correlate"
      provider = "nomad"
      port     = "http"
      tags     = ["metrics"]

      check {
        name     = "ready"
        type     = "http"
        path     = "/readyz"
        interval = "10s"
        timeout  = "3s"

        check_restart {
          limit = 3
          grace = "30s"
        }
      }
    }

    task "correlate" {
      driver = "exec"

      artifact {
        source      = "${var.artifact_url}/klaxon_linux_${attr.cpu.arch}.zip"
        destination = "local/bin"
      }

      # The rules come with the archive (local/bin/rules.d); POST
      # /-/reload or a new job version loads changed rules.
      config {
        command = "local/bin/klaxon"
        args    = ["correlate", "--config", "${NOMAD_TASK_DIR}/klaxon-correlate.yaml"]
      }

      template {
        destination = "local/klaxon-correlate.yaml"
        change_mode = "restart"
        data        = <<-EOF
          # role: correlate (rendered by Nomad; see deploy/config/klaxon-correlate.yaml)
          data_dir: {{ env "NOMAD_ALLOC_DIR" }}/data
          rules_dir: {{ env "NOMAD_TASK_DIR" }}/bin/rules.d
          nats:
            url: "${var.nats_url}"
            token: "{{ with nomadVar "nomad/jobs/klaxon-correlate" }}{{ .nats_token }}{{ end }}"
            replicas: 3
          nomad:
            ui_url: "${var.nomad_ui_url}"
          correlator:
            partitions: 2     # events split by node across the two replicas (nats-server 2.10+)
            snapshot_interval: 1s
          sinks:
            - type: stdout
              format: json
          http:
            listen: "{{ env "NOMAD_ADDR_http" }}"
            token: "{{ with nomadVar "nomad/jobs/klaxon-correlate" }}{{ .http_token }}{{ end }}"
          shutdown_timeout: 15s
        EOF
      }

      kill_timeout = "20s"
      kill_signal  = "SIGTERM"

      resources {
        cpu    = 500
        memory = 512
      }
    }
  }

  group "events" {
    count = 1

    # The stream checkpoint lives in the allocation directory; a sticky,
    # migrating disk carries it to the replacement allocation.
    ephemeral_disk {
      size    = 300
      sticky  = true
      migrate = true
    }

    # A dynamic port on the host network; klaxon listens on it.
    network {
      port "http" {}
    }

    restart {
      attempts = 10
      interval = "30m"
      delay    = "15s"
      mode     = "delay"
    }

    service {
      name     = "klaxon-events"
      provider = "nomad"
      port     = "http"
      tags     = ["metrics"]

      check {
        name     = "ready"
        type     = "http"
        path     = "/readyz"
        interval = "15s"
        timeout  = "3s"
      }
    }

    task "events" {
      driver = "exec"

      # No static Nomad token: the task's workload identity (NOMAD_TOKEN)
      # streams through the task API socket of the client it runs on (the
      # agent forwards the stream to the servers; no TLS files needed).
      # With ACLs, klaxon-events.policy.hcl is attached to the job (see the
      # top of this file).
      identity {
        env         = true
        change_mode = "restart"
      }

      env {
        NOMAD_ADDR = "${NOMAD_UNIX_ADDR}"
      }

      artifact {
        source      = "${var.artifact_url}/klaxon_linux_${attr.cpu.arch}.zip"
        destination = "local/bin"
      }

      config {
        command = "local/bin/klaxon"
        args    = ["ingest", "--config", "${NOMAD_TASK_DIR}/klaxon-events.yaml"]
      }

      template {
        destination = "local/klaxon-events.yaml"
        change_mode = "restart"
        data        = <<-EOF
          # role: ingest of the Nomad event stream
          node: "{{ env "node.unique.name" }}"
          data_dir: {{ env "NOMAD_ALLOC_DIR" }}/data
          nats:
            url: "${var.nats_url}"
            token: "{{ with nomadVar "nomad/jobs/klaxon-correlate" }}{{ .nats_token }}{{ end }}"
          # The address and token come from NOMAD_ADDR (the task API socket)
          # and NOMAD_TOKEN (the workload identity). Nomad sets
          # NOMAD_NAMESPACE to the job's own namespace: the stream says "*".
          sources:
            nomad_events:
              - namespace: "*"
          http:
            listen: "{{ env "NOMAD_ADDR_http" }}"
            token: "{{ with nomadVar "nomad/jobs/klaxon-correlate" }}{{ .http_token }}{{ end }}"
        EOF
      }

      kill_timeout = "20s"
      kill_signal  = "SIGTERM"

      resources {
        cpu    = 200
        memory = 128
      }
    }
  }
}
