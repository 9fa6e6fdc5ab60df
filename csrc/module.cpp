// Entry point of the compiled extension xlm_fast._C: each csrc/<stem>.cpp exposes a
// register_<stem>(module) function that adds its bindings here.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void register_tokenization_xlm(py::module_&);
void register_moses(py::module_&);

PYBIND11_MODULE(_C, m) {
    m.doc() = "xlm_fast compiled core";
    m.attr("built") = true;
    register_tokenization_xlm(m);
    register_moses(m);
}
