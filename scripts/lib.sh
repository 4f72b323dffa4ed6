# Shared launcher conventions, sourced by every script under scripts/ as
#     source "$(dirname "${BASH_SOURCE[0]}")/../../lib.sh" "$@"
# It sets:
#   BASE_PATH   the repo root, found from this file's location; a first positional argument that is an existing
#               directory overrides it (the classic `bash scripts/x.sh /path/to/repo` form).
#   PASS_ARGS   every remaining argument; scripts put them LAST on the Python command line, so a `--flag value`
#               given to the script wins over the script's own default (argparse keeps the last occurrence).
# and cd's to BASE_PATH, and resolves the precision (below). Environment variables (CKPT, TEACHER_CKPT, DATA_DIR, SAVE_PATH, GPUS_PER_NODE, MASTER_PORT,
# DS_CONFIG, ...) override each script's defaults; the scripts read them as ${VAR:-default}.
set -euo pipefail

BASE_PATH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $# -gt 0 && "$1" != -* && -d "$1" ]]; then
    BASE_PATH="$(cd "$1" && pwd)"
    shift
fi
PASS_ARGS=("$@")
cd "$BASE_PATH"
export PYTHONPATH="${BASE_PATH}${PYTHONPATH:+:${PYTHONPATH}}"

PYTHON=${PYTHON:-python}
# Nodes (docs/multinode.md): NNODES nodes (default 1), this one NODE_RANK of them (0..NNODES-1), meeting at
# MASTER_ADDR:MASTER_PORT (node 0's address, set explicitly when NNODES > 1, and a port that every node names alike:
# MASTER_PORT or 29500; on one node a free one); or HOSTFILE, DeepSpeed's launcher starting every host listed there.
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
GPUS_PER_NODE_GIVEN=${GPUS_PER_NODE:-}  # with HOSTFILE only a count the user gave caps the hosts' slots
if [[ -n "${HOSTFILE:-}" && "$HOSTFILE" != /* ]]; then
    export HOSTFILE="${OLDPWD:-$PWD}/$HOSTFILE"  # relative to where the command was typed, not the repo root
fi
# Hardware and precision, asked once per command (a nested launcher, e.g. one the quick start runs, inherits the
# answer): NUM_GPUS, PRECISION_RESOLVED (fp32|bf16|fp16: the fastest native one for PRECISION=auto, else the one
# forced, with a warning when it is emulated here) and PRECISION_INFO. Defaults below follow it: the DeepSpeed config
# ds_config_zero<ZERO_STAGE>_<precision>.json and the teacher's dtype. See distill/hardware.py.
PRECISION=${PRECISION:-auto}
if [[ "${DISTILL_HW_FOR:-}" != "$PRECISION" ]]; then
    hw=$("$PYTHON" -m distill.hardware --precision "$PRECISION" --shell) || exit 2
    eval "$hw"
    export NUM_GPUS PRECISION_RESOLVED PRECISION_INFO DISTILL_HW_FOR="$PRECISION"
    echo "+ $PRECISION_INFO" >&2
fi
# One process per visible GPU; one CPU process where there is none (the offline default).
GPUS_PER_NODE=${GPUS_PER_NODE:-$(( NUM_GPUS > 0 ? NUM_GPUS : 1 ))}
if [[ "$NUM_GPUS" == "0" ]]; then
    # CPU: OpenMP threads that sleep rather than spin when they wait, so a run on a shared or oversubscribed machine
    # slows down gracefully instead of by several times.
    export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
fi

# require_path PATH HINT: stop at once, naming what was looked for and how to make or fetch it.
require_path() {
    if [[ ! -e "$1" ]]; then
        echo "error: missing $1 — make or fetch it with: $2" >&2
        exit 1
    fi
}

# default_ds_config: configs/deepspeed/ds_config_zero<ZERO_STAGE, default 1>_<resolved precision>.json, or DS_NAME's.
default_ds_config() {
    echo "${BASE_PATH}/configs/deepspeed/${DS_NAME:-ds_config_zero${ZERO_STAGE:-1}_${PRECISION_RESOLVED}}.json"
}

# has_flag NAME: true when the caller passed --NAME through, so a script can skip a default that would clash.
has_flag() {
    local a
    for a in "${PASS_ARGS[@]+"${PASS_ARGS[@]}"}"; do
        [[ "$a" == "--$1" || "$a" == "--$1="* ]] && return 0
    done
    return 1
}

# teacher_dtype_flags: TEACHER_DTYPE_FLAGS, the flag that runs the frozen teacher in the resolved precision
# (--teacher-model-bf16 / --teacher-model-fp16; none for fp32), left out when the caller passed a teacher dtype flag.
teacher_dtype_flags() {
    TEACHER_DTYPE_FLAGS=()
    local f
    for f in teacher-model-bf16 no-teacher-model-bf16 teacher-model-fp16 no-teacher-model-fp16; do
        has_flag "$f" && return 0
    done
    case "$PRECISION_RESOLVED" in
        bf16) TEACHER_DTYPE_FLAGS=(--teacher-model-bf16) ;;
        fp16) TEACHER_DTYPE_FLAGS=(--teacher-model-fp16) ;;
    esac
}

# run_python FILE ARGS...: a single-process tool. Like launch, it names itself as the launcher
# (DISTILL_LAUNCHER_PID, this shell), so the SRD runner ends when this shell is killed.
run_python() {
    echo "+ $PYTHON $*" >&2
    DISTILL_LAUNCHER_PID=$BASHPID "$PYTHON" "$@"
}

# check_nodes: stops with one line when NNODES / NODE_RANK / MASTER_ADDR cannot describe a run (launch and srd.sh).
check_nodes() {
    if [[ ! "$NNODES" =~ ^[1-9][0-9]*$ ]]; then
        echo "error: NNODES=$NNODES — give the number of nodes, e.g. NNODES=2" >&2; exit 2
    fi
    if [[ ! "$NODE_RANK" =~ ^[0-9]+$ ]] || (( NODE_RANK >= NNODES )); then
        echo "error: NODE_RANK=$NODE_RANK — give this node's index, 0..$(( NNODES - 1 )) (NNODES=$NNODES)" >&2; exit 2
    fi
    if (( NNODES > 1 )) && [[ -z "${HOSTFILE:-}" && -z "${MASTER_ADDR:-}" ]]; then
        echo "error: NNODES=$NNODES needs MASTER_ADDR, the address of node 0 (the same on every node)" >&2; exit 2
    fi
}

# master_port: MASTER_PORT; else 29500 where several nodes must name the same port (NNODES > 1, HOSTFILE), else a
# free one of this machine.
master_port() {
    if [[ -n "${MASTER_PORT:-}" ]]; then
        echo "$MASTER_PORT"
    elif [[ "$NNODES" != 1 || -n "${HOSTFILE:-}" ]]; then
        echo 29500
    else
        "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    fi
}

# launch FILE ARGS...: a training/eval entry point on GPUS_PER_NODE processes on each of NNODES nodes (gloo on CPU):
#   HOSTFILE set          DeepSpeed's launcher (`deepspeed`, run as python -m deepspeed.launcher.runner) starts every
#                         host of the hostfile over ssh (pdsh); DEEPSPEED_ARGS adds launcher flags (e.g. --no_ssh_check)
#   one node, one process $PYTHON FILE ARGS: the entry point makes its own world of one (distill/dist.py), which saves
#                         torchrun's extra interpreter and torch import (seconds per launch)
#   otherwise             torchrun (--nnodes --node_rank --nproc_per_node --master_addr --master_port); for NNODES > 1
#                         the same command runs on every node, each with its NODE_RANK. Run as distill/launch.py,
#                         torchrun that exits with a failed rank's own code (2: bad input) and one line, instead of
#                         its traceback and exit status 1; DeepSpeed's launcher passes the code through itself
launch() {
    check_nodes
    local cmd
    if [[ -n "${HOSTFILE:-}" ]]; then
        if [[ ! -f "$HOSTFILE" ]]; then
            echo "error: HOSTFILE=$HOSTFILE not found — write one line per node, e.g. 'node1 slots=8'" >&2
            exit 1
        fi
        # --no_local_rank: ranks read LOCAL_RANK from the environment, as under torchrun.
        cmd=("$PYTHON" -m deepspeed.launcher.runner --hostfile "$HOSTFILE" ${MASTER_ADDR:+--master_addr "$MASTER_ADDR"}
             --master_port "$(master_port)" ${GPUS_PER_NODE_GIVEN:+--num_gpus "$GPUS_PER_NODE"} --no_local_rank)
        # shellcheck disable=SC2206  # DEEPSPEED_ARGS is a word list
        cmd+=(${DEEPSPEED_ARGS:-})
        cmd+=("$@")
    elif [[ "$NNODES" == 1 && "$GPUS_PER_NODE" == 1 ]]; then
        cmd=("$PYTHON" "$@")
    else
        cmd=("$PYTHON" -m distill.launch --nnodes "$NNODES" --node_rank "$NODE_RANK"
             --nproc_per_node "$GPUS_PER_NODE" --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "$(master_port)"
             "$@")
    fi
    echo "+ ${cmd[*]}" >&2
    # DISTILL_LAUNCHER_PID: this shell, for the training process (distill/dist.py die_with_launcher) to end when it
    # is killed — not left orphaned, training and writing checkpoints. Not for HOSTFILE: a PID of this host means
    # nothing on the others.
    local marker=()
    [[ -z "${HOSTFILE:-}" ]] && marker=(DISTILL_LAUNCHER_PID="$BASHPID")
    env "${marker[@]+"${marker[@]}"}" \
        OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( $(nproc) / GPUS_PER_NODE > 0 ? $(nproc) / GPUS_PER_NODE : 1 ))}" \
        "${cmd[@]}"
}

# flag_value NAME DEFAULT: the value of the last --NAME passed through (or DEFAULT), e.g. to name an output directory.
flag_value() {
    local value="$2" prev="" a
    for a in "${PASS_ARGS[@]+"${PASS_ARGS[@]}"}"; do
        if [[ "$prev" == "--$1" ]]; then value="$a"; fi
        if [[ "$a" == "--$1="* ]]; then value="${a#--$1=}"; fi
        prev="$a"
    done
    echo "$value"
}
