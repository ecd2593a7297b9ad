"""tpu_scripts/: shellcheck, --help, argument errors, and the commands their dry runs print.

Dry-run lines are "+ " and the printf-%q-quoted argv, so shlex.split gives back the exact
argv. A fake `gcloud` first on PATH fails loudly if a script ever runs the real thing.
"""

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tpu_scripts"
SH_SCRIPTS = ["create.sh", "setup.sh", "launch.sh", "logs.sh", "stop.sh", "delete.sh"]
TPU_PATTERN = "^([^ ]*/)?python[0-9.]* -m train[.]"  # the pattern common.sh kills


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A minimal environment: PATH (with a gcloud that must never run) and a scratch HOME."""
    tmp = tmp_path_factory.mktemp("tpu_scripts")
    fakebin = tmp / "bin"
    fakebin.mkdir()
    gcloud = fakebin / "gcloud"
    gcloud.write_text("#!/bin/sh\necho 'the real gcloud was called' >&2\nexit 97\n")
    gcloud.chmod(0o755)
    (tmp / "home").mkdir()
    return {
        "PATH": f"{fakebin}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp / "home"),
        "LANG": "C.UTF-8",
    }


def sh(env, script, *args, extra_env=None, rc=0):
    result = subprocess.run(
        ["bash", str(SCRIPTS / script), *args],
        env={**env, **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert result.returncode == rc, (result.returncode, result.stdout, result.stderr)
    return result


def commands(result):
    """The argv of every '+ ' line of a dry run (and nothing else is on stdout)."""
    lines = result.stdout.splitlines()
    assert lines and all(line.startswith("+ ") for line in lines), result.stdout
    return [shlex.split(line[2:]) for line in lines]


def flag(argv, name):
    values = [a.split("=", 1)[1] for a in argv if a.startswith(name + "=")]
    assert len(values) == 1, (name, argv)
    return values[0]


def gcloud_lines(cmds, *verb):
    return [
        c
        for c in cmds
        if c[:3] == ["gcloud", "compute", "tpus"] and c[3 : 3 + len(verb)] == list(verb)
    ]


def one_line_error(result):
    assert result.stdout == ""
    err = result.stderr.strip()
    assert err and "\n" not in err, result.stderr
    return err


BASE = ["--name", "jx-test", "--zone", "us-central2-b"]


# -- static checks -----------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
@pytest.mark.parametrize("script", SH_SCRIPTS + ["common.sh", "slurm_gpu.sbatch"])
def test_shellcheck_clean(script):
    result = subprocess.run(
        ["shellcheck", "-x", str(SCRIPTS / script)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SH_SCRIPTS + ["slurm_gpu.sbatch"])
def test_help_exits_0_with_usage(env, script):
    result = sh(env, script, "--help")
    assert result.stdout.startswith("Usage:")
    assert result.stderr == ""


@pytest.mark.parametrize("script", SH_SCRIPTS)
def test_missing_name_is_a_one_line_error(env, script):
    args = ["--zone", "z", "--dry-run"]
    if script == "create.sh":
        args += ["--accelerator-type", "v4-8"]
    if script == "launch.sh":
        args += ["--workdir", "gs://b/r", "--", "python", "-m", "train.s5"]
    err = one_line_error(sh(env, script, *args, rc=2))
    assert "name" in err


@pytest.mark.parametrize("script", SH_SCRIPTS)
def test_unknown_option_is_a_one_line_error(env, script):
    one_line_error(sh(env, script, *BASE, "--dry-run", "--no-such-flag", rc=2))


def test_kill_pattern_matches_training_processes_only():
    pat = re.compile(TPU_PATTERN)
    assert (SCRIPTS / "common.sh").read_text().count(f"TRAIN_PATTERN='{TPU_PATTERN}'") == 1
    assert pat.search("python -m train.diffusion --config=x --workdir=gs://b/r")
    assert pat.search("/home/me/jaxml_venv/bin/python3.11 -m train.s5")
    # the remote shell that launches the run must survive the kill
    assert not pat.search("bash -c set -e; pkill ...; nohup python -m train.s5 >> log &")
    assert not pat.search("python -m train_other")


# -- create.sh -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "accelerator, version",
    [
        ("v4-32", "tpu-ubuntu2204-base"),
        ("v4-8", "tpu-ubuntu2204-base"),
        ("v5litepod-16", "v2-alpha-tpuv5-lite"),
        ("v5p-32", "v2-alpha-tpuv5"),
        ("v6e-16", "v2-alpha-tpuv6e"),
    ],
)
def test_create_picks_runtime_version(env, accelerator, version):
    (argv,) = commands(sh(env, "create.sh", *BASE, "--accelerator-type", accelerator, "--dry-run"))
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "jx-test"]
    assert flag(argv, "--zone") == "us-central2-b"
    assert flag(argv, "--accelerator-type") == accelerator
    assert flag(argv, "--version") == version
    assert "--spot" not in argv and "--preemptible" not in argv
    assert not any(a.startswith("--project") for a in argv)


def test_create_spot_project_and_env_defaults(env):
    extra = {"TPU_NAME": "from-env", "ZONE": "europe-west4-b", "ACCELERATOR_TYPE": "v5litepod-16"}
    (argv,) = commands(
        sh(env, "create.sh", "--spot", "--project", "my-proj", extra_env={**extra, "DRY_RUN": "1"})
    )
    assert argv[5] == "from-env"
    assert flag(argv, "--zone") == "europe-west4-b"
    assert flag(argv, "--project") == "my-proj"
    assert flag(argv, "--version") == "v2-alpha-tpuv5-lite"
    assert "--spot" in argv
    # flags (and the positional name) override the environment
    (argv,) = commands(
        sh(
            env,
            "create.sh",
            "other",
            "--zone=z2",
            "--type=v4-8",
            "--version=my-rt",
            "--preemptible",
            extra_env={**extra, "DRY_RUN": "1"},
        )
    )
    assert argv[5] == "other" and flag(argv, "--zone") == "z2"
    assert flag(argv, "--accelerator-type") == "v4-8" and flag(argv, "--version") == "my-rt"
    assert "--preemptible" in argv and "--spot" not in argv


def test_create_queued_spot(env):
    (argv,) = commands(
        sh(
            env,
            "create.sh",
            *BASE,
            "--accelerator-type",
            "v4-32",
            "--queued",
            "--spot",
            "--dry-run",
            "--",
            "--reserved",
        )
    )
    assert argv[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "jx-test"]
    assert flag(argv, "--node-id") == "jx-test"
    assert flag(argv, "--runtime-version") == "tpu-ubuntu2204-base"
    assert flag(argv, "--accelerator-type") == "v4-32"
    assert "--spot" in argv and argv[-1] == "--reserved"
    assert not any(a.startswith("--version") for a in argv)
    (argv,) = commands(
        sh(env, "create.sh", *BASE, "--type", "v4-32", "--queued", "--qr-name", "q1", "--dry-run")
    )
    assert argv[5] == "q1" and flag(argv, "--node-id") == "jx-test" and "--spot" not in argv


@pytest.mark.parametrize(
    "args",
    [
        ["--accelerator-type", "v4-8", "--spot", "--preemptible"],
        ["--accelerator-type", "v4-8", "--queued", "--preemptible"],
        ["--accelerator-type", "tpu7x-8"],  # no default runtime: needs --version
        [],  # no accelerator type
        ["--accelerator-type"],  # option without its value
    ],
)
def test_create_bad_arguments(env, args):
    one_line_error(sh(env, "create.sh", *BASE, "--dry-run", *args, rc=2))


def test_create_rejects_bad_tpu_name(env):
    one_line_error(
        sh(env, "create.sh", "My_TPU", "--zone", "z", "--type", "v4-8", "--dry-run", rc=2)
    )


# -- setup.sh ------------------------------------------------------------------------------


def remote_command(argv):
    remote = flag(argv, "--command")
    assert "\n" not in remote
    check = subprocess.run(["bash", "-n", "-c", remote], capture_output=True, text=True)
    assert check.returncode == 0, (remote, check.stderr)
    return remote


def test_setup_copies_the_tree_and_installs_on_every_worker(env):
    cmds = commands(sh(env, "setup.sh", *BASE, "--project", "p", "--dry-run"))
    archive = [c for c in cmds if c[0] == "git"]
    assert len(archive) == 1 and "archive" in archive[0] and archive[0][-1] == "HEAD"
    tarball = archive[0][archive[0].index("-o") + 1]
    scp = gcloud_lines(cmds, "tpu-vm", "scp")
    ssh = gcloud_lines(cmds, "tpu-vm", "ssh")
    assert len(scp) == 1 and len(ssh) == 1
    assert cmds.index(archive[0]) < cmds.index(scp[0]) < cmds.index(ssh[0])
    assert scp[0][5:7] == [tarball, "jx-test:jaxml.tar.gz"]
    for argv in scp + ssh:
        assert flag(argv, "--worker") == "all"
        assert flag(argv, "--zone") == "us-central2-b" and flag(argv, "--project") == "p"
    remote = remote_command(ssh[0])
    assert "tar -xzf ~/jaxml.tar.gz -C ~/jaxml" in remote
    assert "-m venv ~/jaxml_venv" in remote and ". ~/jaxml_venv/bin/activate" in remote
    assert remote.index("cd ~/jaxml;") < remote.index("pip install --quiet '.[tpu]'")


def test_setup_git_ref(env):
    cmds = commands(
        sh(
            env,
            "setup.sh",
            *BASE,
            "--git-ref",
            "v1.2",
            "--repo",
            "https://example.com/j.git",
            "--python",
            "python3.12",
            "--dry-run",
        )
    )
    assert [c[:5] for c in cmds] == [["gcloud", "compute", "tpus", "tpu-vm", "ssh"]]
    assert flag(cmds[0], "--worker") == "all"
    remote = remote_command(cmds[0])
    assert "git clone --quiet https://example.com/j.git ~/jaxml" in remote
    assert "checkout --quiet --force v1.2" in remote
    assert "PY=python3.12;" in remote


@pytest.mark.parametrize(
    "args", [["--repo", "https://example.com/j.git"], ["--python", "/usr/bin/python3; rm -rf ~"]]
)
def test_setup_bad_arguments(env, args):
    one_line_error(sh(env, "setup.sh", *BASE, "--dry-run", *args, rc=2))


# -- launch.sh -----------------------------------------------------------------------------

TRAIN = [
    "python",
    "-m",
    "train.diffusion",
    "--config=train/configs/diffusion_digits.py",
    "--config.model.channels=64",
]


def launched(remote):
    """The argv started with nohup, and the log it appends to."""
    m = re.search(r"nohup (.*) >> (\S+) 2>&1 < /dev/null &", remote)
    assert m, remote
    return shlex.split(m.group(1)), m.group(2)


def test_launch_kills_then_starts_on_every_worker(env):
    workdir = "gs://my-bucket/runs/pfgm_digits"
    (argv,) = commands(
        sh(env, "launch.sh", *BASE, "--workdir", workdir, "--", *TRAIN, extra_env={"DRY_RUN": "1"})
    )
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "jx-test"]
    assert flag(argv, "--worker") == "all"
    remote = remote_command(argv)
    train, log = launched(remote)
    assert train == TRAIN + [f"--workdir={workdir}"]
    assert log == "~/jaxml_logs/pfgm_digits.log"
    kill, start = remote.index(f"pkill -TERM -f '{TPU_PATTERN}'"), remote.index("nohup ")
    assert kill < remote.index(f"pkill -KILL -f '{TPU_PATTERN}'") < start
    assert kill < remote.index("rm -f /tmp/libtpu_lockfile") < start
    assert remote.index(". ~/jaxml_venv/bin/activate") < start
    assert remote.startswith("set -e; cd ~/jaxml;")


def test_launch_passes_workdir_and_args_verbatim(env):
    workdir = "gs://b/runs/it's a $run"  # odd characters survive both shells
    train = ["python", "-m", "train.s5", "--config.name=a b;c", "--config.x=$(no)"]
    (argv,) = commands(
        sh(
            env,
            "launch.sh",
            "jx-test",
            "--zone=z",
            f"--workdir={workdir}",
            "--run-name=s5",
            "--env",
            "TFDS_DATA_DIR=gs://b/tfds dir",
            "--dry-run",
            "--",
            *train,
        )
    )
    remote = remote_command(argv)
    got, log = launched(remote)
    assert got == train + [f"--workdir={workdir}"]
    assert log == "~/jaxml_logs/s5.log"
    assert "export TFDS_DATA_DIR=gs://b/tfds\\ dir;" in remote


def test_launch_local_workdir_needs_allow_flag(env):
    args = [*BASE, "--dry-run", "--workdir", "/tmp/runs/x"]
    err = one_line_error(sh(env, "launch.sh", *args, "--", *TRAIN, rc=2))
    assert "gs://" in err and "--allow-local-workdir" in err
    (argv,) = commands(sh(env, "launch.sh", *args, "--allow-local-workdir", "--", *TRAIN))
    train, log = launched(remote_command(argv))
    assert train[-1] == "--workdir=/tmp/runs/x" and log == "~/jaxml_logs/x.log"


@pytest.mark.parametrize(
    "args",
    [
        ["--workdir", "gs://b/r"],  # no command
        ["--", *TRAIN],  # no workdir
        ["--workdir", "gs://", "--", *TRAIN],
        ["--workdir", "runs/x", "--", *TRAIN],
        ["--workdir", "gs://b/r", "--", *TRAIN, "--workdir=gs://b/other"],
        ["--workdir", "gs://b/r", "--grace", "soon", "--", *TRAIN],
        ["--workdir", "gs://b/r", "--env", "1BAD=x", "--", *TRAIN],
    ],
)
def test_launch_bad_arguments(env, args):
    one_line_error(sh(env, "launch.sh", *BASE, "--dry-run", *args, rc=2))


def running(pid):
    """Alive and not a zombie (an orphan's zombie may linger if nothing reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_launch_remote_command_runs(env, tmp_path):
    """Run the remote command in bash here (twice): the old run gets SIGTERM and exits, the
    new one starts with the multi-host variables from the (faked) TPU metadata."""
    module = f"fake_train_{os.getpid()}"
    home = tmp_path / "home"
    (home / "jaxml" / module).mkdir(parents=True)
    (home / "jaxml" / module / "__init__.py").write_text("")
    (home / "jaxml" / module / "diffusion.py").write_text(
        "import os, signal, sys, time\n"
        "def term(*_):\n"
        "    print('SIGTERM: saved', flush=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, term)\n"
        "env = {k: v for k, v in os.environ.items() if k.startswith('JAXML_')}\n"
        "print('started', sys.argv[1:], sorted(env.items()), flush=True)\n"
        "while True:\n"
        "    time.sleep(0.05)\n"
    )
    (home / "jaxml_venv" / "bin").mkdir(parents=True)
    python_dir = Path(sys.executable).parent
    (home / "jaxml_venv" / "bin" / "activate").write_text(f'PATH="{python_dir}:$PATH"\n')
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    (fakebin / "curl").write_text(
        '#!/bin/sh\ncase "$*" in\n'
        "  *worker-network-endpoints*) printf 'n-w-0:0:10.1.0.5,n-w-1:1:10.1.0.6' ;;\n"
        "  *agent-worker-number*) printf 1 ;;\n  *) exit 22 ;;\nesac\n"
    )
    (fakebin / "curl").chmod(0o755)
    (argv,) = commands(
        sh(
            env,
            "launch.sh",
            *BASE,
            "--workdir",
            "gs://b/run1",
            "--dry-run",
            "--",
            "python",
            "-m",
            f"{module}.diffusion",
            "--config=c.py",
        )
    )
    remote = flag(argv, "--command")
    # Only this test's fake processes may be matched, and no real TPU lock file is touched.
    remote = remote.replace("-m train[.]", f"-m {module}[.]")
    remote = remote.replace("/tmp/libtpu_lockfile", str(tmp_path / "lockfile"))
    run_env = {**env, "HOME": str(home), "PATH": f"{fakebin}{os.pathsep}{env['PATH']}"}
    pids = []
    try:
        for _ in range(2):
            out = subprocess.run(
                ["bash", "-c", remote], env=run_env, capture_output=True, text=True, timeout=20
            )
            assert out.returncode == 0, out.stderr
            pids.append(int(re.search(r"started pid (\d+)", out.stdout).group(1)))
            log = home / "jaxml_logs" / "run1.log"
            for _ in range(100):  # wait for the process to log its start
                if log.read_text().count("started") == len(pids):
                    break
                time.sleep(0.05)
        text = log.read_text()
        assert text.count("=== ") == 2 and text.count("SIGTERM: saved") == 1
        assert text.index("SIGTERM: saved") > text.index("started") > 0
        assert "['--config=c.py', '--workdir=gs://b/run1']" in text
        expected = "[('JAXML_COORDINATOR_ADDRESS', '10.1.0.5:8476'), "
        expected += "('JAXML_NUM_PROCESSES', '2'), ('JAXML_PROCESS_ID', '1')]"
        assert text.count(expected) == 2
        assert not running(pids[0])  # the first run is gone
        assert running(pids[1])  # the second runs
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# -- logs.sh, stop.sh, delete.sh -----------------------------------------------------------


def test_logs(env):
    (argv,) = commands(sh(env, "logs.sh", *BASE, "--dry-run"))
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "jx-test"]
    assert flag(argv, "--worker") == "0"
    remote = remote_command(argv)
    assert "ls -t ~/jaxml_logs/*.log" in remote and "tail -n 100 -F" in remote
    (argv,) = commands(
        sh(
            env,
            "logs.sh",
            *BASE,
            "--worker",
            "all",
            "--run-name",
            "s5",
            "--no-follow",
            "--lines=20",
            "--dry-run",
        )
    )
    assert flag(argv, "--worker") == "all"
    remote = remote_command(argv)
    assert "f=~/jaxml_logs/s5.log;" in remote and "tail -n 20 " in remote and "-F" not in remote
    one_line_error(sh(env, "logs.sh", *BASE, "--worker", "w1", "--dry-run", rc=2))


def test_stop_signals_every_worker(env):
    (argv,) = commands(sh(env, "stop.sh", *BASE, "--grace", "30", "--dry-run"))
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "jx-test"]
    assert flag(argv, "--worker") == "all"
    remote = remote_command(argv)
    assert remote.index(f"pkill -TERM -f '{TPU_PATTERN}'") < remote.index("-lt 30 ]")
    assert remote.index("-lt 30 ]") < remote.index(f"pkill -KILL -f '{TPU_PATTERN}'")


def test_delete(env):
    (argv,) = commands(sh(env, "delete.sh", *BASE, "--project", "p", "--dry-run"))
    assert argv == [
        "gcloud",
        "compute",
        "tpus",
        "tpu-vm",
        "delete",
        "jx-test",
        "--zone=us-central2-b",
        "--project=p",
        "--quiet",
    ]
    (argv,) = commands(sh(env, "delete.sh", *BASE, "--queued", "--async", "--dry-run"))
    assert argv == [
        "gcloud",
        "compute",
        "tpus",
        "queued-resources",
        "delete",
        "jx-test",
        "--zone=us-central2-b",
        "--force",
        "--quiet",
        "--async",
    ]


# -- slurm_gpu.sbatch ----------------------------------------------------------------------


def srun_argv(result):
    (argv,) = commands(result)
    assert argv[0] == "srun"
    i = argv.index("jaxml-task")
    assert argv[i - 3 : i - 1] == ["bash", "-c"]
    return argv, argv[i - 1], argv[i + 1], argv[i + 2 :]


def test_sbatch_header():
    text = (SCRIPTS / "slurm_gpu.sbatch").read_text()
    header = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    for option in ["--nodes=", "--ntasks-per-node=1", "--gpus-per-node=", "--time="]:
        assert any(line.startswith(f"#SBATCH {option}") for line in header), option


def test_sbatch_dry_run_prints_srun_with_the_entrypoint(env):
    cmd = ["python", "-m", "train.s5", "--config=train/configs/s5_mnist1d.py"]
    extra = {
        "DRY_RUN": "1",
        "WORKDIR": "/shared/runs/s5",
        "SLURM_JOB_NUM_NODES": "4",
        "SLURM_NTASKS": "4",
        "SLURM_JOB_ID": "4242",
    }
    argv, _, tasks_per_node, train = srun_argv(sh(env, "slurm_gpu.sbatch", *cmd, extra_env=extra))
    assert train == cmd + ["--workdir=/shared/runs/s5"]
    assert "--nodes=4" in argv and "--ntasks-per-node=1" in argv and tasks_per_node == "1"
    address = flag(argv, "--export").split(",")[1]
    assert re.fullmatch(r"JAXML_COORDINATOR_ADDRESS=[^:]+:\d+", address)
    # the default command: python -m $ENTRYPOINT [--config=$CONFIG]
    extra = {"DRY_RUN": "1", "WORKDIR": "/w", "CONFIG": "train/configs/diffusion_digits.py"}
    *_, train = srun_argv(sh(env, "slurm_gpu.sbatch", extra_env=extra))
    assert train == [
        "python",
        "-m",
        "train.diffusion",
        "--config=train/configs/diffusion_digits.py",
        "--workdir=/w",
    ]


def test_sbatch_task_sets_rank_and_keeps_all_gpus(env):
    """The per-task wrapper: JAXML_* from SLURM, and SLURM_LOCALID gone with one task per
    node (JAX would otherwise pin each process to GPU SLURM_LOCALID)."""
    extra = {"DRY_RUN": "1", "WORKDIR": "/w"}
    _, task, _, _ = srun_argv(sh(env, "slurm_gpu.sbatch", "true", extra_env=extra))
    slurm = {**env, "SLURM_NTASKS": "3", "SLURM_PROCID": "2", "SLURM_LOCALID": "0"}
    show = ["sh", "-c", 'echo "$JAXML_PROCESS_ID/$JAXML_NUM_PROCESSES ${SLURM_LOCALID-unset}"']
    for tasks_per_node, local in [("1", "unset"), ("8", "0")]:
        out = subprocess.run(
            ["bash", "-c", task, "jaxml-task", tasks_per_node, *show],
            env=slurm,
            capture_output=True,
            text=True,
        )
        assert out.stdout.strip() == f"2/3 {local}", out.stderr


@pytest.mark.parametrize(
    "extra, args",
    [
        ({}, ["python", "-m", "train.s5"]),  # no WORKDIR
        ({"WORKDIR": "/w"}, ["python", "-m", "train.s5", "--workdir=/x"]),  # two workdirs
    ],
)
def test_sbatch_bad_arguments(env, extra, args):
    one_line_error(sh(env, "slurm_gpu.sbatch", *args, extra_env={"DRY_RUN": "1", **extra}, rc=2))
