"""PDF report of ufom-bench: `Report` (document builder) and `add_theory_section` (the theory/ section).

    from ufom_bench.report import Report, add_theory_section
    rep = Report("ufom-bench", "UFOM (Likhosherstov et al., ICML 2021): theory against measurements")
    add_theory_section(rep)
    rep.build("results/report.pdf")
"""

from ufom_bench.report.document import VERDICTS, FormulaFallback, Report, pdf_page_count, pdf_text, sanitize
from ufom_bench.report.theory_section import add_theory_section, q_star_table

__all__ = [
    "FormulaFallback",
    "Report",
    "VERDICTS",
    "add_theory_section",
    "pdf_page_count",
    "pdf_text",
    "q_star_table",
    "sanitize",
]
