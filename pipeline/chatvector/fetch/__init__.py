"""How a run reads its inputs (`merge.fetch` / `--fetch`): the choice of mode (`mode`), snapshot mode's
download (`downloads`) and hasher (`hashing`), stream mode's range-request reader (`streaming`), both behind one
interface (`inputs`), and the work folders under the Hugging Face cache (`workspace`).
"""
