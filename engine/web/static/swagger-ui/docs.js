// Nurture's API page: Swagger UI over this server's own document. A file, not an inline
// script, so the page's Content-Security-Policy can allow scripts from this origin only.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,  // the default would send the document to validator.swagger.io
    tryItOutEnabled: false,
    persistAuthorization: false,
  });
});
