// Swagger UI over this service's own REST API description (/docs, TONLE_API_DOCS only).
window.ui = SwaggerUIBundle({ url: "/v1/openapi.json", dom_id: "#swagger-ui" });
