import subprocess
import sys


def test_subpackages_import_from_any_directory_without_heavy_libraries(tmp_path):
    code = (
        "import sys, kecpm, kecpm.retrieval, kecpm.agents, kecpm.extractor, kecpm.prompts, kecpm.eval, kecpm.cli;"
        "heavy = ('torch', 'transformers', 'chromadb', 'llama_cpp', 'langchain_chroma');"
        "heavy = [m for m in heavy if m in sys.modules];"
        "print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
