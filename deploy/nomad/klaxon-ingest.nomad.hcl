# klaxon ingest on every Nomad client: a system job with one group per OS.
#
# Linux clients tail the Nomad agent log; Windows clients tail it too and
# subscribe to the Windows Event Log (System, Application). Events go to the
# external NATS cluster at var.nats_url, where `klaxon correlate`
# (klaxon-correlate.nomad.hcl) turns them into incidents.
#
# Needs: the raw_exec driver enabled on the clients (the agent log and the
# Event Log are host resources), the klaxon archive at var.artifact_url, and
# a Nomad Variable at nomad/jobs/klaxon-ingest with nats_token (the NATS
# token the ingesters use) and http_token (the bearer token of klaxon's HTTP
# endpoint, required because it listens beyond loopback).
#
# klaxon asks the local agent for the job of the allocations its log lines
# name with the task's workload identity, through the task API socket
# (Nomad 1.10+; Windows 10 1803+ for the socket): no Nomad token to hand
# out. With ACLs enabled, attach the policy that lets it read allocations:
#
#   nomad acl policy apply -namespace default -job klaxon-ingest klaxon-ingest klaxon-ingest.policy.hcl
#   nomad var put nomad/jobs/klaxon-ingest nats_token=... http_token=...
#   nomad job run -var nats_url=tls://nats-1:4222,tls://nats-2:4222 klaxon-ingest.nomad.hcl

variable "datacenters" {
  description = "Datacenters the ingesters run in."
  type        = list(string)
  default     = ["*"]
}

variable "node_pool" {
  description = "Node pool of the clients to watch (\"all\": every pool)."
  type        = string
  default     = "all"
}

variable "nats_url" {
  description = "NATS cluster the ingesters publish to (comma-separated URLs)."
  type        = string
  default     = "tls://nats.service.consul:4222"
}

variable "artifact_url" {
  description = "Base URL of the klaxon release archives (klaxon_<os>_<arch>.zip)."
  type        = string
  default     = "https://releases.example.com/klaxon/latest"
}

variable "linux_log_glob" {
  description = "Nomad agent log files on Linux clients (log_file of the agent)."
  type        = string
  default     = "/var/log/nomad/nomad*.log"
}

variable "windows_log_glob" {
  description = "Nomad agent log files on Windows clients."
  type        = string
  default     = "C:\\ProgramData\\nomad\\logs\\nomad*.log"
}

# What the Linux and the Windows clients do differently. The group of the
# job is written once and stands in it once per entry (dynamic "group"),
# named by the entry's key, which is also the ${attr.kernel.name} it runs on.
locals {
  clients = {
    linux = {
      command     = "local/bin/klaxon"
      kill_signal = "SIGTERM"
      memory      = 128
      data_dir    = "/var/lib/klaxon"
      example     = "klaxon-ingest.yaml"
      sources     = <<-EOF
        sources:
          # Publish only what some rule of the correlators can use (their
          # rules reach every sidecar through the KLAXON_RULES bucket).
          edge_filter: true
          nomad_log:
            - paths: ["${var.linux_log_glob}"]
              read_from: end
      EOF
    }
    windows = {
      command = "local/bin/klaxon.exe"
      # Windows has no SIGTERM: Nomad stops raw_exec tasks with a
      # CTRL_BREAK, which klaxon handles like an interrupt.
      kill_signal = ""
      memory      = 160
      data_dir    = "'C:\\ProgramData\\klaxon'"
      example     = "klaxon-ingest-windows.yaml"
      sources     = <<-EOF
        sources:
          edge_filter: true
          nomad_log:
            - paths: ['${var.windows_log_glob}']
              read_from: end
          # Live Event Log subscription; its bookmark is the checkpoint.
          winevt:
            channels: [System, Application]
          # Without the live subscription, follow the EVTX files instead:
          # winevt_files:
          #   - paths: ['C:\Windows\System32\winevt\Logs\System.evtx']
      EOF
    }
  }
}

job "klaxon-ingest" {
  type        = "system"
  datacenters = var.datacenters
  node_pool   = var.node_pool
  priority    = 70

  update {
    max_parallel = 5
    stagger      = "10s"
  }

  dynamic "group" {
    for_each = local.clients
    labels   = [group.key]

    content {
      constraint {
        attribute = "${attr.kernel.name}"
        value     = group.key
      }

      network {
        port "http" {
          static = 9464
        }
      }

      restart {
        attempts = 10
        interval = "30m"
        delay    = "15s"
        mode     = "delay"
      }

      service {
        name     = "klaxon-ingest"
        provider = "nomad"
        port     = "http"
        tags     = ["metrics", group.key]

        check {
          name     = "ready"
          type     = "http"
          path     = "/readyz"
          interval = "15s"
          timeout  = "3s"
        }
      }

      task "ingest" {
        driver = "raw_exec"

        # No static Nomad token: the task's workload identity (NOMAD_TOKEN)
        # reaches the local agent through the task API socket, which needs
        # no TLS files; klaxon reads NOMAD_ADDR and NOMAD_TOKEN as the nomad
        # CLI does. With ACLs, klaxon-ingest.policy.hcl is attached to the
        # job (see the top of this file).
        identity {
          env         = true
          change_mode = "restart"
        }

        env {
          NOMAD_ADDR = "${NOMAD_UNIX_ADDR}"
        }

        artifact {
          source      = "${var.artifact_url}/klaxon_${group.key}_${attr.cpu.arch}.zip"
          destination = "local/bin"
        }

        config {
          command = group.value.command
          args    = ["ingest", "--config", "${NOMAD_TASK_DIR}/klaxon-ingest.yaml"]
        }

        template {
          destination = "local/klaxon-ingest.yaml"
          change_mode = "restart"
          data        = <<-EOF
            # role: ingest (rendered by Nomad; see deploy/config/${group.value.example})
            node: "{{ env "node.unique.name" }}"
            # On the host, so that checkpoints outlive the allocation.
            data_dir: ${group.value.data_dir}
            nats:
              url: "${var.nats_url}"
              replicas: 3
              token: "{{ with nomadVar "nomad/jobs/klaxon-ingest" }}{{ .nats_token }}{{ end }}"
            ${chomp(group.value.sources)}
            http:
              listen: "{{ env "NOMAD_ADDR_http" }}"
              token: "{{ with nomadVar "nomad/jobs/klaxon-ingest" }}{{ .http_token }}{{ end }}"
            shutdown_timeout: 15s
          EOF
        }

        kill_timeout = "20s"
        kill_signal  = group.value.kill_signal

        resources {
          cpu    = 200
          memory = group.value.memory
        }
      }
    }
  }
}
