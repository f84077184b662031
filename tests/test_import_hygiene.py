import subprocess
import sys
import textwrap


def test_runtime_never_imports_torch(small_bundle):
    code = textwrap.dedent(f"""
        import sys
        import s2s_runtime
        from s2s_runtime.cli import main
        model = s2s_runtime.load({str(small_bundle)!r}, device="cpu")
        model.generate(["abc", "hello"])
        main(["info", {str(small_bundle)!r}])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx", "safetensors"))
        assert not heavy, heavy
        print("clean")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("clean")


def test_missing_onnxruntime_names_the_extras():
    code = textwrap.dedent("""
        import sys
        sys.modules["onnxruntime"] = None  # as if it were not installed
        from s2s_runtime.engine.sessions import import_onnxruntime
        try:
            import_onnxruntime()
        except ImportError as error:
            print(error)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "pip install 's2s-runtime[cpu]'" in result.stdout and "s2s-runtime[gpu]" in result.stdout


def test_export_commands_explain_the_missing_extra():
    code = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None
        from s2s_runtime.cli import main
        try:
            main(["export", "ckpt", "--out", "b"])
        except SystemExit as exit:
            print(exit.code)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "pip install 's2s-runtime[export]'" in result.stdout and "torch==2.13.0" in result.stdout


def test_the_runtime_imports_neither_the_exporter_nor_the_bench():
    """The runtime package depends on nothing of s2s_export or s2s_bench (their commands reach `s2s` through entry
    points); the layers inside it are test_architecture.py's."""
    import ast
    from pathlib import Path

    import s2s_runtime

    root = Path(s2s_runtime.__file__).parent
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not {name for name in imported if name.split(".")[0] in ("s2s_export", "s2s_bench")}, path
    code = textwrap.dedent("""
        import sys
        import s2s_runtime, s2s_runtime.serving, s2s_runtime.serving.http, s2s_runtime.serving.bulk, s2s_runtime.cli
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("s2s_export", "s2s_bench"))
        assert not loaded, loaded
        print("clean")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "clean", result.stderr
