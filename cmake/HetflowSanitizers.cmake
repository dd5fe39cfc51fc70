# HETFLOW_SANITIZE="address;undefined" or "thread": applies to everything built after this point.
if(HETFLOW_SANITIZE)
  list(JOIN HETFLOW_SANITIZE "," _hetflow_sanitizers)
  add_compile_options(-fsanitize=${_hetflow_sanitizers} -fno-omit-frame-pointer -g)
  add_link_options(-fsanitize=${_hetflow_sanitizers})
  if("undefined" IN_LIST HETFLOW_SANITIZE)
    add_compile_options(-fno-sanitize-recover=undefined)
  endif()
endif()
